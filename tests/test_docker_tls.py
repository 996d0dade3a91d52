"""Docker Engine API over TCP: mutual TLS (CA + client certificate) or refused; socket and ssh modes unchanged."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from odoo_stack_ops.config import DockerConfig, validate_tree
from odoo_stack_ops.errors import ConfigError
from odoo_stack_ops.executors.docker import tls_config
from odoo_stack_ops.sandbox.tls import make_ca_and_cert


@pytest.fixture
def tls_material(tmp_path):
    """ca.pem and a certificate + key signed by it, made now (never stored in the repository)."""
    ca, cert, key = make_ca_and_cert(tmp_path / "docker-tls", "127.0.0.1")
    return {"tls_ca_cert": str(ca), "tls_client_cert": str(cert), "tls_client_key": str(key)}


def test_tcp_without_tls_material_is_refused_by_config():
    with pytest.raises(ValidationError) as err:
        DockerConfig(mode="tcp", base_url="tcp://droplet:2375")
    text = str(err.value)
    assert "docker.tls_ca_cert" in text and "docker.tls_client_cert" in text and "docker.tls_client_key" in text
    assert "--tlsverify" in text and "docker.mode 'ssh'" in text


def test_tcp_refusal_is_reported_in_the_stack_error():
    with pytest.raises(ConfigError, match=r"docker: .*only used with TLS and a client certificate"):
        validate_tree({"database": {"host": "h", "sslmode": "require"}, "spaces": {"bucket": "b"},
                       "docker": {"mode": "tcp", "base_url": "tcp://droplet:2375"}})


def test_tcp_plain_http_url_is_refused(tls_material):
    with pytest.raises(ValidationError, match="tcp://host:2376"):
        DockerConfig(mode="tcp", base_url="http://droplet:2375", **tls_material)


def test_tcp_uses_mutual_tls(tls_material):
    cfg = DockerConfig(mode="tcp", base_url="tcp://droplet:2376", **tls_material)
    tls = tls_config(cfg)
    assert tls is not None
    assert tls.verify is True and tls.ca_cert == tls_material["tls_ca_cert"]  # the daemon checked against our CA
    assert tls.cert == (tls_material["tls_client_cert"], tls_material["tls_client_key"])


def test_tls_config_refuses_unvalidated_tcp():
    """Even a config built without validation never yields a plain TCP client."""
    cfg = DockerConfig.model_construct(mode="tcp", base_url="tcp://droplet:2375", tls_ca_cert=None,
                                       tls_client_cert=None, tls_client_key=None)
    with pytest.raises(ConfigError, match="plain TCP"):
        tls_config(cfg)


def test_tls_material_that_does_not_exist_is_refused(tmp_path, tls_material):
    cfg = DockerConfig(mode="tcp", base_url="tcp://droplet:2376", **{**tls_material, "tls_ca_cert": str(tmp_path / "no.pem")})
    with pytest.raises(ConfigError, match="docker TLS material unusable"):
        tls_config(cfg)


@pytest.mark.parametrize("cfg", [DockerConfig(mode="local", base_url="unix:///var/run/docker.sock"),
                                 DockerConfig(mode="ssh")])
def test_socket_and_ssh_modes_unchanged(cfg):
    assert tls_config(cfg) is None
