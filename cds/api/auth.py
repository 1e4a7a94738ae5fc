"""Trusting CDS Clients (CDS Hooks 2.0): signed JWT bearer tokens.

Every protected call carries ``Authorization: Bearer <JWT>``. A token is
accepted only when all of these hold:

* ``alg`` is ES384 or RS384 (``none`` and every HMAC algorithm are refused:
  a shared secret cannot identify a client);
* ``iss`` is a client in the trusted-clients file;
* ``kid`` names a key of that client: from its configured JWKS, or from the
  JWKS at the token's ``jku`` when that URL is on the client's allowlist
  (fetched with a bounded time and size, cached);
* the signature verifies with that key, and the key's type fits ``alg``;
* ``aud`` is exactly the URL called (public base URL + path);
* ``exp`` and ``iat`` are sane within a small leeway, and the token lives
  no longer than the configured maximum;
* ``jti`` was never seen before (the replay store is shared by every worker
  when Redis is configured).

A refusal says nothing to the client beyond 401; the reason is kept for the
log, and neither the token nor any part of it is ever logged. No Flask here.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import jwt
import yaml
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cds.bootstrap import is_loopback
from cds.errors import AuthenticationError, StoreUnavailable

ALGORITHMS = ("ES384", "RS384")
MAX_TOKEN_BYTES = 16 * 1024
MAX_JWKS_BYTES = 256 * 1024
JKU_TIMEOUT_SECONDS = 3.0
#: An unknown kid may trigger a refetch of a client's jku at most this often.
JKU_REFETCH_SECONDS = 30.0


class AuthRejected(AuthenticationError):
    """A refused token. ``reason`` is for the log only; the client sees 401."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


class TrustedClientsError(ValueError):
    """The trusted-clients file is unreadable or unsafe; the service does not start."""


@dataclass(frozen=True)
class Principal:
    """Who called, as the verified token says."""

    iss: str
    jti: str
    sub: str | None = None
    tenant: str | None = None


@dataclass(frozen=True)
class PublicKey:
    """One verification key; ``alg`` is what the JWK itself pins, if anything."""

    key: Any
    alg: str | None


@dataclass(frozen=True)
class TrustedClient:
    iss: str
    keys: Mapping[str, PublicKey]
    jku: tuple[str, ...] = ()
    fhir_servers: tuple[str, ...] = ()


def _parse_jwks(data: Any, where: str) -> dict[str, PublicKey]:
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise TrustedClientsError(f"{where}: a JWKS is an object with a 'keys' array")
    keys: dict[str, PublicKey] = {}
    for index, jwk in enumerate(data["keys"]):
        place = f"{where}.keys[{index}]"
        if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str) or not jwk["kid"]:
            raise TrustedClientsError(f"{place}: every key needs a 'kid'")
        if "d" in jwk or "k" in jwk:
            raise TrustedClientsError(f"{place}: private or symmetric key material does not belong here")
        if jwk.get("kty") not in ("EC", "RSA"):
            raise TrustedClientsError(f"{place}: kty must be EC or RSA")
        if jwk.get("use", "sig") != "sig":
            raise TrustedClientsError(f"{place}: key use is not 'sig'")
        if jwk.get("alg") is not None and jwk["alg"] not in ALGORITHMS:
            raise TrustedClientsError(f"{place}: alg {jwk['alg']!r} is not one of {', '.join(ALGORITHMS)}")
        try:
            keys[jwk["kid"]] = PublicKey(jwt.PyJWK(jwk).key, jwk.get("alg"))
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
            raise TrustedClientsError(f"{place}: not a usable public key ({type(exc).__name__})") from None
    return keys


def _keys_from_url_response(data: Any) -> dict[str, PublicKey]:
    """A fetched JWKS: unusable keys are skipped, not fatal."""
    keys: dict[str, PublicKey] = {}
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        return keys
    for jwk in data["keys"][:100]:
        try:
            keys.update(_parse_jwks({"keys": [jwk]}, "jku"))
        except TrustedClientsError:
            continue
    return keys


class TrustedClients:
    """iss -> client, from a YAML or JSON file (format in docs/operations.md)."""

    def __init__(self, clients: Mapping[str, TrustedClient]) -> None:
        self.clients = dict(clients)

    @classmethod
    def load(cls, path: str | Path) -> TrustedClients:
        path = Path(path)
        try:
            raw = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise TrustedClientsError(f"{path}: cannot read ({exc.strerror})") from None
        try:
            doc = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise TrustedClientsError(f"{path}: not valid YAML or JSON") from None
        return cls.from_document(doc, base=path.parent, name=str(path))

    @classmethod
    def from_document(cls, doc: Any, *, base: Path = Path("."), name: str = "trusted clients") -> TrustedClients:
        if not isinstance(doc, dict) or not isinstance(doc.get("clients"), list):
            raise TrustedClientsError(f"{name}: expected an object with a 'clients' array")
        clients: dict[str, TrustedClient] = {}
        for index, entry in enumerate(doc["clients"]):
            where = f"{name}: clients[{index}]"
            if not isinstance(entry, dict) or not isinstance(entry.get("iss"), str) or not entry["iss"]:
                raise TrustedClientsError(f"{where}: every client needs an 'iss'")
            unknown = set(entry) - {"iss", "jwks", "jwks_file", "jku", "fhir_servers", "name"}
            if unknown:
                raise TrustedClientsError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
            keys: dict[str, PublicKey] = {}
            if "jwks" in entry:
                keys.update(_parse_jwks(entry["jwks"], f"{where}.jwks"))
            if "jwks_file" in entry:
                file = base / str(entry["jwks_file"])
                try:
                    keys.update(_parse_jwks(json.loads(file.read_text(encoding="utf-8")), str(file)))
                except OSError as exc:
                    raise TrustedClientsError(f"{where}.jwks_file: cannot read {file} ({exc.strerror})") from None
                except ValueError:
                    raise TrustedClientsError(f"{where}.jwks_file: {file} is not JSON") from None
            jku = tuple(_strings(entry.get("jku", []), f"{where}.jku"))
            for url in jku:
                _check_fetch_url(url, f"{where}.jku", allow_http=False)
            if not keys and not jku:
                raise TrustedClientsError(f"{where}: a client needs keys ('jwks' or 'jwks_file') or a 'jku' allowlist")
            servers = tuple(s.rstrip("/") for s in _strings(entry.get("fhir_servers", []), f"{where}.fhir_servers"))
            if entry["iss"] in clients:
                raise TrustedClientsError(f"{where}: iss {entry['iss']!r} listed twice")
            clients[entry["iss"]] = TrustedClient(entry["iss"], keys, jku, servers)
        return cls(clients)

    def get(self, iss: str) -> TrustedClient | None:
        return self.clients.get(iss)


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise TrustedClientsError(f"{where}: expected a list of strings")
    return value


def _check_fetch_url(url: str, where: str, *, allow_http: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and (allow_http or is_loopback(parts.hostname or ""))):
        if parts.hostname:
            return
    raise TrustedClientsError(f"{where}: {url!r} must be an https URL (http only on loopback)")


class ReplayStore(Protocol):
    def first_use(self, key: str, ttl_seconds: int) -> bool:
        """Remember ``key`` for ``ttl_seconds``; False if it was already there."""

    def ping(self) -> bool: ...


class MemoryReplayStore:
    """Per-process replay memory: enough for one worker, not for several."""

    def __init__(self, clock: Callable[[], float] = time.time, max_entries: int = 1_000_000) -> None:
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._clock = clock
        self._max = max_entries

    def first_use(self, key: str, ttl_seconds: int) -> bool:
        now = self._clock()
        with self._lock:
            if len(self._seen) >= self._max or len(self._seen) % 1024 == 0:
                self._seen = {k: t for k, t in self._seen.items() if t > now}
            expires = self._seen.get(key)
            if expires is not None and expires > now:
                return False
            if len(self._seen) >= self._max:
                raise StoreUnavailable("replay store is full")
            self._seen[key] = now + ttl_seconds
            return True

    def ping(self) -> bool:
        return True


class RedisReplayStore:
    """``SET key NX EX ttl`` in Redis: one answer for every worker and host."""

    def __init__(self, url: str, *, prefix: str = "cds:jti:") -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self.prefix = prefix

    def first_use(self, key: str, ttl_seconds: int) -> bool:
        try:
            return bool(self._redis.set(self.prefix + key, b"1", nx=True, ex=max(1, int(ttl_seconds))))
        except self._errors:
            raise StoreUnavailable("the replay store (Redis) is unavailable") from None

    def ping(self) -> bool:
        try:
            return bool(self._redis.ping())
        except self._errors:
            return False


@dataclass
class _CachedJwks:
    keys: dict[str, PublicKey]
    fetched_at: float
    expires_at: float


@dataclass
class JkuFetcher:
    """JWKS by URL, cached; only ever called for allowlisted URLs."""

    ttl_seconds: float = 300.0
    clock: Callable[[], float] = time.time
    _cache: dict[str, _CachedJwks] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def key(self, url: str, kid: str) -> PublicKey | None:
        now = self.clock()
        with self._lock:
            cached = self._cache.get(url)
        if cached and cached.expires_at > now and (kid in cached.keys
                                                   or now - cached.fetched_at < JKU_REFETCH_SECONDS):
            return cached.keys.get(kid)
        keys = self._fetch(url)
        with self._lock:
            self._cache[url] = _CachedJwks(keys, now, now + self.ttl_seconds)
        return keys.get(kid)

    @staticmethod
    def _fetch(url: str) -> dict[str, PublicKey]:
        import requests

        try:
            with requests.get(url, timeout=JKU_TIMEOUT_SECONDS, stream=True, allow_redirects=False,
                              headers={"Accept": "application/json"}) as response:
                if response.status_code != 200:
                    return {}
                body = b""
                for chunk in response.iter_content(16384):
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        return {}
            return _keys_from_url_response(json.loads(body))
        except (requests.RequestException, ValueError):
            return {}


class Authenticator:
    """Verifies one Authorization header for one audience URL."""

    def __init__(self, clients: TrustedClients, replay: ReplayStore, *, leeway: int = 30,
                 max_lifetime: int = 300, jku: JkuFetcher | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.clients = clients
        self.replay = replay
        self.leeway = leeway
        self.max_lifetime = max_lifetime
        self.jku = jku or JkuFetcher(clock=clock)
        self.clock = clock

    def verify(self, authorization: str | None, audience: str) -> Principal:
        token = _bearer(authorization)
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise AuthRejected("token is not a well-formed JWT") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise AuthRejected(f"alg {str(alg)[:16]!r} is not allowed")
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.upper() != "JWT"):
            raise AuthRejected("typ is not JWT")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthRejected("kid missing")
        iss = unverified.get("iss")
        client = self.clients.get(iss) if isinstance(iss, str) else None
        if client is None:
            raise AuthRejected("iss is not a trusted client")
        iss = client.iss
        key = self._key(client, kid, header.get("jku"))
        if not _key_fits(key.key, alg) or (key.alg is not None and key.alg != alg):
            raise AuthRejected("key does not fit alg")
        now = self.clock()
        try:
            claims = jwt.decode(
                token, key.key, algorithms=[alg], leeway=self.leeway,
                options={"require": ["iss", "aud", "exp", "iat", "jti"], "verify_aud": False,
                         "verify_iat": False, "verify_exp": False})
        except jwt.PyJWTError as exc:
            raise AuthRejected(f"signature or claims invalid ({type(exc).__name__})") from None
        self._check_times(claims, now)
        self._check_audience(claims.get("aud"), audience)
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > 256:
            raise AuthRejected("jti missing or too long")
        replay_key = hashlib.sha256(f"{iss}\0{jti}".encode()).hexdigest()
        ttl = int(claims["exp"] - now + self.leeway) + 1
        if not self.replay.first_use(replay_key, ttl):
            raise AuthRejected("jti already used (replay)")
        sub, tenant = claims.get("sub"), claims.get("tenant")
        return Principal(iss=iss, jti=jti, sub=sub if isinstance(sub, str) else None,
                         tenant=tenant if isinstance(tenant, str) else None)

    def _key(self, client: TrustedClient, kid: str, jku: Any) -> PublicKey:
        if jku is not None:
            if not isinstance(jku, str) or jku not in client.jku:
                raise AuthRejected("jku is not on the client's allowlist")
        key = client.keys.get(kid)
        if key is None and isinstance(jku, str):
            key = self.jku.key(jku, kid)
        if key is None:
            raise AuthRejected("kid is not a key of the client")
        return key

    def _check_times(self, claims: Mapping[str, Any], now: float) -> None:
        for name in ("exp", "iat"):
            value = claims.get(name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise AuthRejected(f"{name} is not a number")
        exp, iat = float(claims["exp"]), float(claims["iat"])
        if exp <= now - self.leeway:
            raise AuthRejected("token expired")
        if iat > now + self.leeway:
            raise AuthRejected("token issued in the future")
        if exp > now + self.max_lifetime + self.leeway or exp - iat > self.max_lifetime + self.leeway:
            raise AuthRejected("token lifetime is over the maximum")

    @staticmethod
    def _check_audience(aud: Any, audience: str) -> None:
        if isinstance(aud, str) and aud == audience:
            return
        if isinstance(aud, list) and audience in aud and all(isinstance(a, str) for a in aud):
            return
        raise AuthRejected("aud is not the URL called")


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise AuthRejected("no Authorization header")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthRejected("Authorization is not a Bearer token")
    if len(token) > MAX_TOKEN_BYTES:
        raise AuthRejected("token too long")
    return token


def _key_fits(material: Any, alg: str) -> bool:
    if alg == "ES384":
        return isinstance(material, ec.EllipticCurvePublicKey) and material.curve.name == "secp384r1"
    if alg == "RS384":
        return isinstance(material, rsa.RSAPublicKey) and material.key_size >= 2048
    return False
