"""Cloud Triton: model repository export, publishing on promotion, and a local server."""
