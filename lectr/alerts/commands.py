"""``lectr alerts ...``: show, set and test an org's alert channels from the command line."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI imports this module at start: keep it light
    import asyncpg

    from lectr.alerts.settings import AlertSettings


def add_parser(commands) -> None:
    """Register ``lectr alerts show|set|test`` on the top-level subparsers."""
    alerts = commands.add_parser("alerts", help="where an org's anomaly alerts go",
                                 description="Email recipients and webhook for an org's anomaly alerts.")
    actions = alerts.add_subparsers(dest="alerts_command", metavar="ACTION", required=True)
    show = actions.add_parser("show", help="print an org's alert channels")
    show.add_argument("org", help="org name or id")
    put = actions.add_parser("set", help="set an org's alert recipients and webhook",
                             description="Set where an org's alerts go. Options left out keep their value; "
                                         "--email replaces the whole recipient list.")
    put.add_argument("org", help="org name or id")
    put.add_argument("--email", action="append", metavar="ADDRESS",
                     help="a recipient (repeat, or separate with commas); --email '' clears the list")
    put.add_argument("--webhook", metavar="URL", help="https URL to POST alerts to (Slack incoming webhooks "
                                                      "work as they are); --webhook '' removes it")
    test = actions.add_parser("test", help="send a test alert to every configured channel now")
    test.add_argument("org", help="org name or id")


def _describe(name: str, settings: AlertSettings) -> None:
    emails = ", ".join(settings.email_recipients) or "-"
    print(f"Alerts for {name!r}:")
    print(f"  email:   {emails}{'' if settings.email_enabled else ' (off)'}")
    print(f"  webhook: {settings.webhook_url or '-'}{'' if settings.webhook_enabled else ' (off)'}")


async def _org(conn: asyncpg.Connection, ref: str) -> tuple[int, str]:
    from lectr.api.orgs import find_org, org_name

    org_id = await find_org(conn, ref)
    return org_id, await org_name(conn, org_id)


async def show(args: argparse.Namespace, conn: asyncpg.Connection, url: str) -> int:
    from lectr.alerts.settings import get_settings

    org_id, name = await _org(conn, args.org)
    _describe(name, await get_settings(conn, org_id))
    return 0


async def set_(args: argparse.Namespace, conn: asyncpg.Connection, url: str) -> int:
    from lectr.alerts.settings import AlertSettings, get_settings, put_settings
    from lectr.settings.config import Settings

    org_id, name = await _org(conn, args.org)
    current = await get_settings(conn, org_id)
    recipients = current.email_recipients
    if args.email is not None:
        recipients = tuple(part for item in args.email for part in item.split(","))
    webhook = current.webhook_url if args.webhook is None else args.webhook
    stored = await put_settings(conn, org_id, AlertSettings(recipients, current.email_enabled, webhook,
                                                            current.webhook_enabled),
                                allow_private=Settings.from_env().alerts.allow_private_webhooks)
    _describe(name, stored)
    return 0


async def test(args: argparse.Namespace, conn: asyncpg.Connection, url: str) -> int:
    from lectr.alerts.job import send_test_alerts
    from lectr.settings.config import Settings

    org_id, name = await _org(conn, args.org)
    results = await send_test_alerts(conn, org_id, Settings.from_env().alerts)
    if not results:
        print(f"No alert channel is set for {name!r}: lectr alerts set {args.org} --email ADDRESS --webhook URL")
        return 1
    for r in results:
        print(f"{r['channel']:8} {r['target']}: {'sent' if r['ok'] else 'FAILED: ' + r['error']}")
    return 0 if all(r["ok"] for r in results) else 1


ACTIONS = {("alerts", "show"): show, ("alerts", "set"): set_, ("alerts", "test"): test}
