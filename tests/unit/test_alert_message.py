"""What an alert says, for every metric kind; alert settings validation; the SMTP URL. Pure."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from lectr.settings.alerts import AlertConfig, AlertConfigError, parse_smtp_url
from lectr.alerts.job import Backoff
from lectr.alerts.message import compose, format_window
from lectr.alerts.settings import SettingsError, check_recipients, check_threshold, check_webhook, check_webhook_target
from lectr.settings.config import ConfigError, Settings

START = datetime(2025, 5, 1, 14, 0, tzinfo=timezone.utc)
END = datetime(2025, 5, 1, 16, 0, tzinfo=timezone.utc)
LINK = "https://lectr.example.com"


def anomaly(metric: str, **over) -> dict:
    base = {"id": 42, "org_id": 1, "feature": "chat", "metric": metric, "direction": "up", "window_start": START,
            "window_end": END, "current_value": 12.4, "baseline_mean": 3.1, "baseline_std": 0.8,
            "deviation_sigma": 11.55, "detail": {}}
    base.update(over)
    return base


# metric, fields, what the text must say (headline, current, baseline)
CASES = [
    ("cost", {}, ["Cost per hour up", "$12.40/h", "$3.10/h ± $0.80/h", "+11.6σ"]),
    ("requests", {"direction": "down", "current_value": 120.0, "baseline_mean": 1840.0, "baseline_std": 95.0,
                  "deviation_sigma": -18.1}, ["Requests per hour down", "120 req/h", "1,840 req/h ± 95 req/h",
                                              "-18.1σ"]),
    ("error_rate", {"current_value": 0.142, "baseline_mean": 0.004, "baseline_std": 0.002, "deviation_sigma": 6.2},
     ["Error rate up", "14.2%", "0.4% ± 0.2 pp", "+6.2σ"]),
    ("p95_latency", {"current_value": 4180.0, "baseline_mean": 1210.0, "baseline_std": 230.0,
                     "deviation_sigma": 12.9}, ["p95 latency up", "4.18 s", "1.21 s ± 230 ms", "+12.9σ"]),
    ("model_drift", {"current_value": 0.41, "baseline_mean": 0.0, "baseline_std": 0.01, "deviation_sigma": 41.0,
                     "detail": {"model": "gpt-4.1", "new_model": True}},
     ["Model mix shifted to gpt-4.1 (a model not seen in the baseline)", "41%", "0% ± 1 pp", "+41.0σ"]),
    ("latency_threshold", {"feature": None, "current_value": 2600.0, "baseline_mean": None, "baseline_std": None,
                           "deviation_sigma": None, "detail": {"threshold_ms": 2000}},
     ["p95 latency over the 2.00 s threshold", "2.60 s", "no baseline yet", "whole org"]),
]


@pytest.mark.parametrize("metric, fields, expected", CASES, ids=[c[0] for c in CASES])
def test_alert_says_what_where_when_value_baseline_deviation_and_link(metric, fields, expected):
    alert = compose(anomaly(metric, **fields), "acme", LINK)
    for text in (alert.text, alert.body):
        for part in expected:
            assert part in text, (part, text)
        assert "acme" in text
        assert "2025-05-01 14:00–16:00 UTC" in text
        assert f"{LINK}/dashboard/anomalies?anomaly=42" in text
    where = "feature chat" if fields.get("feature", "chat") else "whole org"
    assert where in alert.text and where in alert.subject
    assert "\n" not in alert.text  # one line: what a Slack webhook shows
    payload = alert.payload
    assert payload["text"] == alert.text and payload["metric"] == metric and payload["id"] == 42
    assert payload["window_start"] == "2025-05-01T14:00:00+00:00" and payload["url"].endswith("anomaly=42")


def test_threshold_alert_names_the_threshold_in_the_body():
    alert = compose(anomaly("latency_threshold", detail={"threshold_ms": 2000}), "acme", LINK)
    assert "Threshold: 2.00 s" in alert.body


def test_window_across_midnight_and_days():
    assert format_window(datetime(2025, 5, 1, 23, tzinfo=timezone.utc),
                         datetime(2025, 5, 2, 0, tzinfo=timezone.utc)) == "2025-05-01 23:00–24:00 UTC"
    assert format_window(datetime(2025, 5, 1, 22, tzinfo=timezone.utc),
                         datetime(2025, 5, 2, 2, tzinfo=timezone.utc)) == "2025-05-01 22:00 – 2025-05-02 02:00 UTC"


def test_org_and_feature_names_are_text_not_markup_in_the_payload():
    alert = compose(anomaly("cost", feature="<b>x</b>"), "a&b", LINK)
    assert alert.payload["feature"] == "<b>x</b>" and alert.payload["org"] == "a&b"


@pytest.mark.parametrize("bad", ["nobody", "a@b", "a b@example.com", "x@example.com\r\nBcc: y@example.com",
                                 "@example.com", "a@-example.com"])
def test_a_bad_email_address_is_named(bad):
    with pytest.raises(SettingsError) as exc:
        check_recipients(["ok@example.com", bad])
    assert repr(bad.strip())[1:-1] in str(exc.value) or bad.strip() in str(exc.value)
    assert exc.value.field == "email_recipients"


def test_recipients_are_trimmed_and_deduplicated():
    assert check_recipients(" a@example.com, B@example.com ,a@EXAMPLE.com,") == ("a@example.com", "B@example.com")
    assert check_recipients([]) == ()


@pytest.mark.parametrize("bad", ["ftp://hooks.example.com/x", "http://hooks.example.com/x", "not a url",
                                 "https://user:pw@hooks.example.com/x", "https://hooks.example.com/x?token=1"])
def test_a_bad_webhook_url_is_refused(bad):
    with pytest.raises(SettingsError) as exc:
        check_webhook(bad)
    assert exc.value.field == "webhook_url"


def test_webhook_https_or_loopback_http():
    assert check_webhook("https://hooks.slack.com/services/T0/B0/XYZ") == "https://hooks.slack.com/services/T0/B0/XYZ"
    assert check_webhook("http://127.0.0.1:9999/hook") == "http://127.0.0.1:9999/hook"
    assert check_webhook("") is None and check_webhook(None) is None


@pytest.mark.parametrize("url, kind", [
    ("http://127.0.0.1:9999/hook", "loopback"), ("https://localhost/hook", "loopback"),
    ("https://api.localhost./hook", "loopback"), ("https://[::1]/hook", "loopback"),
    ("https://10.1.2.3/secret-path", "private"), ("https://192.168.0.7/h", "private"),
    ("https://169.254.169.254/latest/meta-data", "link-local"), ("https://[::ffff:10.0.0.1]/h", "private"),
    ("https://100.64.0.1/h", "shared"), ("https://0.0.0.0/h", "unspecified")])
def test_a_webhook_written_as_an_internal_address_is_refused_when_set(url, kind):
    with pytest.raises(SettingsError) as exc:
        check_webhook_target(check_webhook(url), allow_private=False)
    assert exc.value.field == "webhook_url" and f"a {kind} address" in str(exc.value)
    assert "LECTR_ALERT_WEBHOOK_ALLOW_PRIVATE=1" in str(exc.value)
    assert "secret-path" not in str(exc.value)  # a webhook path can be a secret
    check_webhook_target(check_webhook(url), allow_private=True)  # the operator allows them


@pytest.mark.parametrize("url", ["https://2130706433/h", "https://0x7f.1/h", "https://127.1/h"])
def test_a_legacy_ipv4_form_is_no_host_name(url):
    with pytest.raises(SettingsError) as exc:  # what a connect would read as 127.0.0.1
        check_webhook(url)
    assert exc.value.field == "webhook_url"


@pytest.mark.parametrize("url", ["https://hooks.slack.com/services/T0/B0/XYZ", "https://8.8.8.8/h",
                                 "https://internal.example/h", None])
def test_a_public_address_or_a_name_is_left_to_delivery(url):
    check_webhook_target(url, allow_private=False)  # names are judged when resolved, at each delivery


@pytest.mark.parametrize("raw, expected", [("2000", 2000), (1500, 1500), ("", None), (None, None)])
def test_threshold(raw, expected):
    assert check_threshold(raw) == expected


@pytest.mark.parametrize("bad", ["0", "-5", "1.5", "abc", "99999999", True])
def test_bad_threshold(bad):
    with pytest.raises(SettingsError):
        check_threshold(bad)


def test_smtp_url_password_is_never_shown():
    server = parse_smtp_url("smtps://alerts%40acme.com:s3cr%3At@mail.example.com")
    assert (server.host, server.port, server.use_tls) == ("mail.example.com", 465, True)
    assert server.username == "alerts@acme.com" and server.password == "s3cr:t"
    assert "s3cr" not in repr(server) and "s3cr" not in str(server) and "s3cr" not in server.display
    assert parse_smtp_url("smtp://mail.example.com").port == 587


@pytest.mark.parametrize("bad", ["http://mail.example.com", "smtp://", "smtp://h:notaport", "smtp://h/path"])
def test_bad_smtp_url_is_refused_without_echoing_it(bad):
    with pytest.raises(AlertConfigError) as exc:
        parse_smtp_url(bad.replace("://", "://u:topsecret@", 1) if "@" not in bad and bad != "smtp://" else bad)
    assert "topsecret" not in str(exc.value)


def test_settings_from_env():
    s = Settings.from_env({"LECTR_SMTP_URL": "smtp://u:pw@mail.example.com:2525", "LECTR_ADMIN_PORT": "9001",
                           "LECTR_HOST": "0.0.0.0", "LECTR_ALERT_INTERVAL": "5"})
    assert s.alerts.smtp.port == 2525 and s.alerts.sender == "lectr@mail.example.com"
    assert s.alerts.dashboard_url == "http://127.0.0.1:9001" and s.alerts.interval == 5.0
    assert Settings.from_env({"LECTR_DASHBOARD_URL": "https://lectr.example.com/"}).alerts.dashboard_url == \
        "https://lectr.example.com"
    assert Settings.from_env({}).alerts == AlertConfig(smtp=None, sender="lectr@localhost",
                                                       dashboard_url="http://127.0.0.1:8081", interval=30.0)
    for bad in ({"LECTR_ALERT_INTERVAL": "0"}, {"LECTR_ALERT_FROM": "nobody"}, {"LECTR_SMTP_URL": "mail:25"},
                {"LECTR_DASHBOARD_URL": "javascript:alert(1)"}):
        with pytest.raises(ConfigError):
            Settings.from_env(bad)


def test_backoff_doubles_up_to_its_cap():
    b = Backoff(base=30, cap=600, max_attempts=6)
    assert [b.delay(n) for n in range(1, 7)] == [30, 60, 120, 240, 480, 600]
