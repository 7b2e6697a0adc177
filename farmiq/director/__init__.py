"""The director role (Uptane's director, reduced): signed, addressed, expiring, counted
envelopes around every control-plane document that can change what a gateway runs or does.

``envelope`` is the wire format and the control plane's sealing; ``verifier`` is the
gateway's pure check that owns its trusted state (python-tuf ngclient style: no I/O);
``state_file`` persists the verifier's counters. Light: imports cryptography only.
"""
