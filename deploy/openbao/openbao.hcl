# OpenBao for the bundle-signing keys (transit engine). Initialise and unseal once
# (`bao operator init`, `bao operator unseal`), then `bao secrets enable transit` and
# `farmiq signing adopt ...` (docs/operations.md). Give the control plane a token whose
# policy allows only transit/sign/farmiq-bundle-* and reading transit/keys/farmiq-bundle-*.
storage "file" {
  path = "/openbao/data"
}
listener "tcp" {
  address     = "0.0.0.0:8200"
  tls_disable = true  # terminate TLS in front of it, or set tls_cert_file/tls_key_file
}
api_addr = "http://openbao:8200"
ui = false
