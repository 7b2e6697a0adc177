"""Inference targets other than the local runtime: MCU, cloud Triton, serverless."""
