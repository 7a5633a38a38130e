"""Alert webhooks go only to public addresses unless the operator allows others: the address
kinds, the check on what a name resolves to at delivery time, and the opt-in. Real sockets: a
loopback receiver that must never be reached when the delivery is refused."""

from __future__ import annotations

import socket

import pytest
from aiohttp.abc import AbstractResolver

from lectr.alerts.email import DeliveryError
from lectr.alerts.webhook import PublicOnlyResolver, WebhookClient, WebhookRefused, address_kind
from lectr.settings.config import ConfigError, Settings
from tests.alert_servers import WebhookReceiver

REFUSED = {
    "127.0.0.1": "loopback", "127.3.4.5": "loopback", "::1": "loopback",
    "169.254.169.254": "link-local", "fe80::1": "link-local", "fe80::1%eth0": "link-local",
    "10.0.0.1": "private", "172.16.5.4": "private", "192.168.1.1": "private", "fd00::1": "private",
    "0.0.0.0": "unspecified", "::": "unspecified",
    "224.0.0.1": "multicast", "239.255.255.250": "multicast", "ff02::1": "multicast",
    "100.64.0.1": "shared",
    "198.18.0.1": "private", "192.0.2.1": "private", "2001:db8::1": "private",
    "240.0.0.1": "reserved", "255.255.255.255": "reserved",
    # IPv6 forms that carry an internal IPv4 address
    "::ffff:127.0.0.1": "loopback", "::ffff:169.254.169.254": "link-local", "::ffff:10.1.2.3": "private",
    "2002:a00:1::": "private",  # 6to4 of 10.0.0.1
    "64:ff9b::a9fe:a9fe": "link-local",  # NAT64 of 169.254.169.254
}
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::"]


@pytest.mark.parametrize("address,kind", REFUSED.items())
def test_non_public_addresses_are_named_by_kind(address, kind):
    assert address_kind(address) == kind


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address):
    assert address_kind(address) is None


class FixedResolver(AbstractResolver):
    """Answers every name with the given addresses: a DNS server an attacker controls."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses
        self.asked: list[str] = []

    async def resolve(self, host, port=0, family=socket.AF_INET):
        self.asked.append(host)
        return [{"hostname": host, "host": a, "port": port, "family": socket.AF_INET6 if ":" in a else socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST} for a in self.addresses]

    async def close(self):
        pass


async def test_the_resolver_keeps_only_public_addresses():
    resolver = PublicOnlyResolver(FixedResolver("169.254.169.254", "8.8.8.8", "::1"))
    assert [r["host"] for r in await resolver.resolve("hooks.example.com", 443)] == ["8.8.8.8"]
    with pytest.raises(WebhookRefused, match="link-local, loopback"):
        await PublicOnlyResolver(FixedResolver("169.254.169.254", "::1")).resolve("hooks.example.com", 443)


@pytest.fixture
async def receiver():
    hook = await WebhookReceiver().start()
    yield hook
    await hook.stop()


def _port(url: str) -> int:
    return int(url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])


@pytest.mark.parametrize("host", ["127.0.0.1", "[::ffff:127.0.0.1]", "localhost", "2130706433", "127.1", "0x7f.1"])
async def test_loopback_urls_are_refused_without_a_connection(receiver, host):
    url = f"http://{host}:{_port(receiver.url)}/hooks/T0-secret-path"
    async with WebhookClient() as client:
        with pytest.raises(WebhookRefused) as caught:
            await client.post(url, {"text": "hello"})
    message = str(caught.value)
    assert "refused" in message and "loopback" in message and "LECTR_ALERT_WEBHOOK_ALLOW_PRIVATE=1" in message
    assert "secret-path" not in message and caught.value.permanent
    assert receiver.calls == []


async def test_a_name_that_resolves_internally_at_delivery_is_refused(receiver):
    # hooks.example.com passes every check when saved; at delivery its DNS answers loopback (rebinding)
    url = f"http://hooks.example.com:{_port(receiver.url)}/hooks/T0-secret-path"
    resolver = FixedResolver("127.0.0.1")
    async with WebhookClient(resolver=resolver) as client:
        with pytest.raises(WebhookRefused, match="resolves only to non-public addresses \\(loopback\\)"):
            await client.post(url, {"text": "hello"})
    assert resolver.asked == ["hooks.example.com"] and receiver.calls == []


async def test_the_operator_can_allow_private_addresses(receiver):
    async with WebhookClient(allow_private=True) as client:
        await client.post(receiver.url, {"text": "direct"}, delivery_id="d-1")
    async with WebhookClient(allow_private=True, resolver=FixedResolver("127.0.0.1")) as client:
        await client.post(f"http://hooks.example.com:{_port(receiver.url)}/hooks/x", {"text": "by name"})
    assert [body["text"] for body in receiver.received] == ["direct", "by name"]
    assert receiver.calls[0][1]["X-Lectr-Delivery"] == "d-1"


async def test_an_ordinary_failure_is_not_permanent():
    async with WebhookClient(allow_private=True) as client:
        with pytest.raises(DeliveryError) as caught:
            await client.post("http://127.0.0.1:1/hooks/x", {"text": "hello"})
    assert not caught.value.permanent


def test_the_opt_in_variable():
    assert Settings.from_env({}).alerts.allow_private_webhooks is False
    assert Settings.from_env({"LECTR_ALERT_WEBHOOK_ALLOW_PRIVATE": "1"}).alerts.allow_private_webhooks is True
    assert Settings.from_env({"LECTR_ALERT_WEBHOOK_ALLOW_PRIVATE": "0"}).alerts.allow_private_webhooks is False
    with pytest.raises(ConfigError, match="LECTR_ALERT_WEBHOOK_ALLOW_PRIVATE"):
        Settings.from_env({"LECTR_ALERT_WEBHOOK_ALLOW_PRIVATE": "maybe"})
