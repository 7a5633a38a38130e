"""Auth · Detect · Route: what one request will do, decided from its facts and the snapshot.

``decide`` is a pure function: no I/O, no clock, no logging, nothing changed but the
snapshot's memo of keys already matched, the model registry's memo of names already
detected and this module's memo of paths already read. The request cycle (``handler.py``)
only carries its ``Decision`` out (it calls ``decide_fields``, the same without the
NamedTuples): it answers a refusal, or builds the upstream request from the decision and
sends it. Routing rules, fallbacks, rate limits and budgets will each be one field of the
decision, read from one part of the snapshot.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from lectr.snapshot.directory import Org, Snapshot
from lectr.providers.base import Origin
from lectr.providers.registry import DEFAULT_PROVIDER, PROVIDERS, credentials_for
from lectr.providers.registry import provider_for_path
from lectr.proxy import responses as R
from lectr.proxy.body import body_facts
from lectr.proxy.headers import ClientHeaders
from lectr.proxy.paths import PathRefused, normalise_path
from lectr.proxy.tunnel import UPGRADE_FIELDS, model_in_query

_new_tuple = tuple.__new__


class RequestFacts(NamedTuple):
    """What a request says about itself, as parsed: nothing looked up yet."""

    method: bytes
    path: bytes  # the target's path, as sent (it starts with /v1/)
    query: bytes  # after the "?", b"" when none
    headers: ClientHeaders
    body: bytes
    upgrade: bool  # a WebSocket upgrade (OpenAI's Realtime API): the model is in the query


class Routes(NamedTuple):
    """Where providers live for this process: base origins by provider, and model detection."""

    origins: dict[str, Origin]
    detect: Callable[[str], str | None]  # ModelRegistry.detect


class Decision(NamedTuple):
    """What the request will do.

    Refused: ``refusal`` is a ``responses`` template (status, message, type, code) with
    ``detail`` to fill its ``{}``; ``org`` is None for a missing or unknown key (the request
    belongs to nobody and leaves no event), else the org whose event records the refusal.
    Forwarded: ``origin`` and ``target`` (path and query) say where, ``forward`` the header
    lines' parts to send (four per header: CRLF, name, ": ", value) and ``auth`` the header
    (name, value) that carries the client's key, None to send none of Lectr's.
    ``invalid_provider`` is an ``X-Lectr-Provider`` value that named no provider (the cycle
    logs it). ``rule``, ``fallbacks`` and ``limit`` are for routing rules, fallback targets
    and rate limits: none yet.
    """

    org: Org | None
    refusal: tuple | None
    detail: object
    provider: str
    provider_unknown: bool
    invalid_provider: str | None
    model: str | None
    stream: bool
    origin: Origin | None
    target: bytes
    forward: list[bytes] | None
    auth: tuple[bytes, bytes] | None
    rule: int | None = None
    fallbacks: tuple = ()
    limit: object = None


def _refused(template: tuple, org: Org | None = None, detail: object = None, provider: str = DEFAULT_PROVIDER,
             model: str | None = None, stream: bool = False) -> Decision:
    return Decision(org, template, detail, provider, False, None, model, stream, None, b"", None, None)


MISSING_KEY = _refused(R.MISSING_KEY)
INVALID_KEY = _refused(R.INVALID_KEY)


def decide(facts: RequestFacts, snapshot: Snapshot, routes: Routes) -> Decision:
    """Authenticate, detect the provider and route one ``/v1/`` request; see ``Decision``.

    Refusals, in the order they are checked: no ``X-Lectr-Key`` (401 ``missing_lectr_key``),
    a key no org holds (401 ``invalid_lectr_key``), a path that leaves ``/v1/`` or cannot be
    read one way only (400 ``invalid_path``), Azure for an org without an Azure target (400
    ``azure_not_configured``), a model that cannot be an Azure deployment name (400
    ``invalid_path``). Anything else is forwarded: an unknown model to the default provider,
    marked ``provider_unknown``.
    """
    return _new_tuple(Decision, decide_fields(*facts, snapshot, routes))


def decide_fields(method: bytes, path: bytes, query: bytes, headers: ClientHeaders, body: bytes, upgrade: bool,
                  snapshot: Snapshot, routes: Routes) -> tuple:
    """``decide`` for the request cycle: the facts as arguments, the decision as a plain tuple
    of ``Decision``'s fields in order (a refusal may come as a ``Decision``). A NamedTuple
    built with ``tuple.__new__`` and taken apart again costs about 1,500 instructions per
    request (callgrind), so the hot path builds neither ``RequestFacts`` nor ``Decision``."""
    # Auth: a dict lookup by key hash; the provider never sees a rejected request.
    key = headers.lectr_key
    if not key:
        return MISSING_KEY
    org = snapshot.org_for_key(key)
    if org is None:
        return INVALID_KEY

    # Paths stay under /v1/ (and so under the provider's base): dot segments resolved here,
    # in every spelling, so no server resolves them differently later. A path seen before
    # is one lookup: what follows /v1/ once resolved, and the provider whose native path it is.
    known = _PATHS.get(path)
    if known is None:
        try:
            known = _read_path(path)
        except PathRefused as exc:
            return _refused(R.BAD_PATH, org, exc)
    rest, native = known

    # Detect: X-Lectr-Provider, then a provider's native path (whatever the body holds), then
    # the model; with none of them the default provider serves it, marked provider_unknown.
    forward = headers.forward
    if upgrade:
        # The Realtime API's model is in the query, and this hop's Connection/Upgrade fields
        # are what the provider must see to answer 101.
        model, stream = model_in_query(query), False
        forward = forward + UPGRADE_FIELDS
    else:
        model, stream = body_facts(body, headers.content_type)
    unknown = False
    invalid = None
    override = headers.provider
    if override is not None:
        provider = override.decode("latin-1").strip().lower()
        if provider not in PROVIDERS:
            invalid, provider = provider, DEFAULT_PROVIDER
    else:
        provider = native
        if provider is None:
            provider = routes[1](model) if model else None  # routes.detect
            if provider is None:
                provider, unknown = DEFAULT_PROVIDER, True

    # Route.
    azure = None
    if provider == "azure":
        azure = snapshot.azure_by_org.get(org.id)
        if azure is None:
            return _refused(R.AZURE_NOT_CONFIGURED, org, None, provider, model, stream)
    module = PROVIDERS[provider]
    try:
        origin, target = module.route(routes[0].get(provider), rest, query, model, azure)  # routes.origins
    except PathRefused as exc:
        return _refused(R.BAD_PATH, org, exc, provider, model, stream)
    auth = module.auth(headers.authorization) if headers.authorization is not None else None
    if headers.credentials:  # a forwarded name holds "api-key" (what may_hold_credentials tests)
        # Another provider's key header never leaves for this one; this provider's own,
        # when the client sent it, is the key it gets (never two keys in one request).
        forward, own = credentials_for(module, forward)
        if own:
            auth = None
    return org, None, None, provider, unknown, invalid, model, stream, origin, target, forward, auth, None, (), None


# Paths as sent → (what follows /v1/ once resolved, the provider whose native path it is or
# None). Bounded, as paths are the client's to choose; refused paths are never kept.
_PATHS: dict[bytes, tuple[bytes, str | None]] = {}
_PATHS_MAX = 1024
_PATH_MAX_BYTES = 256


def _read_path(path: bytes) -> tuple[bytes, str | None]:
    """``path`` resolved (``normalise_path``) and read: raises PathRefused when it leaves /v1/."""
    path_as_sent = path
    path = normalise_path(path)
    if not path.startswith(b"/v1/"):
        raise PathRefused("it leaves /v1/")
    rest = path[4:]
    known = rest, provider_for_path(rest)
    if len(_PATHS) >= _PATHS_MAX:
        _PATHS.clear()
    if len(path_as_sent) <= _PATH_MAX_BYTES:
        _PATHS[path_as_sent] = known
    return known
