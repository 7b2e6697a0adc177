"""Signed model bundles: one file holding a model, its manifest and signatures.

See docs/bundle-format.md. ``format`` defines the manifest, ``signing`` the keys,
``trust`` the trust root a gateway holds, ``builder`` makes bundles and ``verifier``
checks them before anything is installed.
"""
