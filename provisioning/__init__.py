"""Fleet provisioning: trust roots, device certificates, enrollment and broker configuration.

Gateway-side code (``provisioning.enroll_client``) only needs ``cryptography`` and the
standard library; everything else here runs on the operator's machine or the control plane.
"""
