"""tlsca - a throw-away certificate authority for rapidretry's TLS tests.

Made with the openssl command line in the test's tmpdir: a CA, server
certificates signed by it (DNS names as subjectAltName) and, for the
"untrusted" cases, a second CA the agent is not told about. Also the
receiver settings Postfix needs for STARTTLS and Cyrus SASL (sasldb).
"""

import os
import subprocess

import rrtest


def _openssl(*args):
    p = subprocess.run(["openssl"] + list(args), capture_output=True,
                       text=True)
    if p.returncode != 0:
        rrtest.bail("openssl %s: %s" % (" ".join(args[:2]), p.stderr))


class CA:
    """CA - a self-signed CA that signs server certificates."""

    def __init__(self, name="ca"):
        self.dir = rrtest.subdir("tls-" + name)
        self.cert = os.path.join(self.dir, "ca.pem")
        self.key = os.path.join(self.dir, "ca.key")
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                 "-subj", "/CN=rapidretry test CA %s" % name,
                 "-keyout", self.key, "-out", self.cert)
        os.chmod(self.cert, 0o644)

    def server(self, name, dns_names):
        """server - (cert, key) for DNS_NAMES, signed by this CA; the key
        readable by root only (Postfix's smtpd reads it as root)."""
        key = os.path.join(self.dir, name + ".key")
        csr = os.path.join(self.dir, name + ".csr")
        cert = os.path.join(self.dir, name + ".pem")
        ext = os.path.join(self.dir, name + ".ext")
        rrtest.write_file(ext, "subjectAltName = %s\n" % ",".join(
            "DNS:" + n for n in dns_names))
        _openssl("req", "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:prime256v1", "-nodes",
                 "-subj", "/CN=%s" % dns_names[0], "-keyout", key,
                 "-out", csr)
        _openssl("x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey",
                 self.key, "-CAcreateserial", "-days", "2",
                 "-extfile", ext, "-out", cert)
        os.chmod(key, 0o600)
        os.chmod(cert, 0o644)
        return cert, key


# smtpd asks tlsmgr for entropy: without it, it answers STARTTLS with 454
TLSMGR = "tlsmgr    unix  -       -       n       1000?   1       tlsmgr\n"


def smtpd_tls(cert, key, level="may"):
    """smtpd_tls - main.cf settings: STARTTLS offered with CERT/KEY, the
    TLS outcome of each connection logged."""
    return {"smtpd_tls_security_level": level,
            "smtpd_tls_cert_file": cert,
            "smtpd_tls_key_file": key,
            "smtpd_tls_loglevel": "1",
            "smtpd_tls_received_header": "yes",
            "smtpd_tls_session_cache_database": ""}


def smtpd_sasl(instance_name, realm, user, password, mechs="PLAIN LOGIN"):
    """smtpd_sasl - a sasldb with USER@REALM and the main.cf settings that
    make smtpd offer MECHS (Cyrus SASL, sasldb). Call before the
    instance is made: the files go into its config directory."""
    # Debian's smtpd reads $config_directory/sasl/smtpd.conf
    d = rrtest.subdir(instance_name + "/etc/sasl")
    db = os.path.join(d, "sasldb2")
    p = subprocess.run(["saslpasswd2", "-p", "-f", db, "-c", "-u", realm,
                        user], input=password, capture_output=True,
                       text=True)
    if p.returncode != 0:
        rrtest.bail("saslpasswd2: %s" % p.stderr)
    subprocess.run(["chown", "postfix", db])
    os.chmod(db, 0o600)
    rrtest.write_file(os.path.join(d, "smtpd.conf"),
                      "pwcheck_method: auxprop\nauxprop_plugin: sasldb\n"
                      "mech_list: %s\nsasldb_path: %s\n" % (mechs, db))
    return {"smtpd_sasl_auth_enable": "yes",
            "smtpd_sasl_type": "cyrus",
            "smtpd_sasl_path": "smtpd",
            "cyrus_sasl_config_path": d,
            "smtpd_sasl_local_domain": realm,
            "smtpd_sasl_security_options": "noanonymous",
            "smtpd_tls_auth_only": "no",
            "smtpd_relay_restrictions":
                "permit_sasl_authenticated, reject",
            "smtpd_recipient_restrictions":
                "permit_sasl_authenticated, reject"}
