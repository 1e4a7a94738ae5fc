"""Sign-in, roles and CSRF for the web pages.

A signed session cookie (Flask's, keyed by CDS_WEB_SECRET_KEY) holds the
username, a CSRF token and when the person signed in; roles are read from
the users file loaded at start, so removing someone there ends their
access at the next restart. Every POST form carries the CSRF token. The
password is checked and forgotten: it is never stored, logged or echoed.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from flask import abort, current_app, redirect, request, session, url_for

from cds.web.users import WebUser

F = TypeVar("F", bound=Callable[..., Any])


def web() -> Any:
    return current_app.extensions["cds_web"]


def csrf_token() -> str:
    """The session's CSRF token (made on first use); templates put it in every form."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def check_csrf() -> None:
    """Refuse a POST whose form does not carry this session's token."""
    sent = request.form.get("csrf_token", "")
    expected = session.get("csrf")
    if not isinstance(expected, str) or not hmac.compare_digest(sent.encode(), expected.encode()):
        abort(400, description="The form expired or did not come from this site. Reload the page and try again.")


def current_user() -> WebUser | None:
    name = session.get("user")
    return web().users.get(name) if isinstance(name, str) else None


def sign_in(user: WebUser) -> None:
    session.clear()  # a new session id for a new person: no fixation
    session.permanent = True
    session["user"] = user.name
    session["csrf"] = secrets.token_urlsafe(32)


def sign_out() -> None:
    session.clear()


def safe_next(target: str | None) -> str:
    """Only a path on this site's web pages, so sign-in cannot redirect elsewhere."""
    if target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and parts.path.startswith("/web/") and "\\" not in target:
            return target
    return url_for("web.home")


def requires(role: str) -> Callable[[F], F]:
    """The view needs a signed-in person with ``role``; others go to sign-in, or get 403."""
    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            user = current_user()
            if user is None:
                return redirect(url_for("web.sign_in_form", next=request.full_path.rstrip("?")))
            if not user.has(role):
                abort(403, description=f"This page needs the {role} role.")
            return view(*args, **kwargs)
        return cast(F, wrapper)
    return decorate
