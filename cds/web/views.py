"""The web pages: sign-in, clinician review, auditor pages.

Each view parses its form, calls one use case (cds.web.review over the
service layer) or one audit-store function, and renders a template.
Errors are pages, not JSON: a CdsError shows its diagnostics, which name
the place in the bundle that is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from werkzeug.exceptions import HTTPException

from cds.api.cards import OVERRIDE_REASONS
from cds.api.logs import get_logger, stack_summary
from cds.audit.fhir_export import resources
from cds.errors import CdsError, InputError
from cds.web import chart, graph
from cds.web.review import URGENCIES
from cds.web.signin import (
    check_csrf,
    csrf_token,
    current_user,
    requires,
    safe_next,
    sign_in,
    sign_out,
    web,
)

bp = Blueprint("web", __name__, url_prefix="/web", template_folder="templates", static_folder="static")

_FILTERS = ("patient", "rule", "action", "triage", "client", "outcome")
TRIAGES = ("emergency", "urgent", "routine", "self-care", "none")
PAGE = 25
SECURITY_HEADERS = {
    # Pages carry PHI: no framing, no third-party anything, no inline script.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def protect(blueprint: Blueprint) -> None:
    """CSRF check on every POST and the security headers on every answer:
    for these pages and for any page that joins them (the intake worklist)."""

    @blueprint.before_request
    def _guard() -> None:
        if request.method == "POST":
            check_csrf()

    @blueprint.after_request
    def _headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response


protect(bp)


@bp.app_context_processor
def _context() -> dict[str, Any]:
    # The observation-intake worklist (cds.intake.web) joins these pages when it is mounted.
    return {"csrf_token": csrf_token, "current_user": current_user,
            "worklist_on": "intake_web" in current_app.blueprints}


@bp.errorhandler(CdsError)
def _cds_error(error: CdsError) -> tuple[str, int]:
    return render_template("error.html", status=error.status, message=error.diagnostics), error.status


@bp.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> tuple[str, int]:
    status = error.code or 500
    return render_template("error.html", status=status, message=error.description or error.name), status


@bp.errorhandler(Exception)
def _unexpected(error: Exception) -> tuple[str, int]:
    get_logger().error("internal_error", error=type(error).__name__, where=stack_summary(error))
    return render_template("error.html", status=500, message="Internal error; it was logged."), 500


# -- sign-in ------------------------------------------------------------------

@bp.get("/")
def home() -> Any:
    user = current_user()
    if user is None:
        return redirect(url_for("web.sign_in_form"))
    return redirect(url_for("web.review_start" if user.has("clinician") else "web.audit_list"))


@bp.get("/sign-in")
def sign_in_form() -> str:
    return render_template("sign_in.html", next=safe_next(request.args.get("next")))


@bp.post("/sign-in")
def sign_in_submit() -> Any:
    name = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    user = web().users.authenticate(name, password) if name and password else None
    if user is None:
        get_logger().warning("web_sign_in_refused", remote=request.remote_addr)
        return render_template("sign_in.html", next=safe_next(request.form.get("next")),
                               error="That username and password do not match.", username=name[:64]), 401
    sign_in(user)
    get_logger().info("web_sign_in", user=user.name, roles=sorted(user.roles))
    return redirect(safe_next(request.form.get("next")))


@bp.post("/sign-out")
def sign_out_submit() -> Any:
    user = current_user()
    sign_out()
    if user is not None:
        get_logger().info("web_sign_out", user=user.name)
    return redirect(url_for("web.sign_in_form"))


# -- clinician review -----------------------------------------------------------

@bp.get("/review")
@requires("clinician")
def review_start() -> str:
    user = current_user()
    assert user is not None
    patient = _patient_reference(request.args.get("patient", ""))
    review = web().review
    found = review.recent(patient=patient) if patient else None
    mine = review.recent(user=user.practitioner, limit=10)
    return render_template("review_start.html", patient=patient, found=found, mine=mine)


@bp.post("/review")
@requires("clinician")
def review_submit() -> Any:
    user = current_user()
    assert user is not None
    upload = request.files.get("bundle_file")
    pasted = request.form.get("bundle", "")
    body: bytes | str = upload.read() if upload is not None and upload.filename else pasted
    try:
        evaluation_id = web().review.evaluate_bundle(body, user)
    except CdsError as error:
        if error.status >= 500:
            raise
        review = web().review
        return render_template("review_start.html", patient=None, found=None, error=error.diagnostics,
                               pasted=pasted, mine=review.recent(user=user.practitioner, limit=10)), error.status
    get_logger().info("web_evaluation")  # who and what are in the audit trail, not the log
    return redirect(url_for("web.review_page", evaluation_id=evaluation_id))


@bp.get("/review/<evaluation_id>")
@requires("clinician")
def review_page(evaluation_id: str) -> str:
    view = web().review.open(evaluation_id)
    return render_template("review.html", view=view, reasons=OVERRIDE_REASONS, urgencies=URGENCIES)


@bp.post("/review/<evaluation_id>/feedback")
@requires("clinician")
def review_feedback(evaluation_id: str) -> Any:
    user = current_user()
    assert user is not None
    card = request.form.get("card", "")
    outcome = request.form.get("outcome", "")
    try:
        web().review.feedback(evaluation_id, card, user, outcome=outcome, reason=request.form.get("reason") or None,
                              comment=request.form.get("comment"))
    except InputError as error:
        flash(f"Not recorded: {error.message}", "error")
        return redirect(url_for("web.review_page", evaluation_id=evaluation_id, _anchor=f"card-{card}"))
    get_logger().info("web_feedback", outcome=outcome)
    flash("Override recorded." if outcome == "overridden" else "Accepted: recorded.", "ok")
    return redirect(url_for("web.review_page", evaluation_id=evaluation_id, _anchor=f"card-{card}"))


# -- auditor --------------------------------------------------------------------

def _audit_log() -> None:
    user = current_user()
    get_logger().info("web_audit_access", auditor=user.name if user else None, endpoint=request.endpoint)


@bp.get("/audit/")
@requires("auditor")
def audit_list() -> str:
    _audit_log()
    args = request.args
    filters = {name: args[name].strip() for name in _FILTERS if args.get(name, "").strip()}
    if "patient" in filters:
        filters["patient"] = _patient_reference(filters["patient"]) or filters["patient"]
    since, until = _day(args.get("since"), "since"), _day(args.get("until"), "until", end=True)
    after = _after(args.get("after"))
    page = web().store.list_evaluations(**filters, since=since, until=until, after=after, limit=PAGE)
    query: dict[str, Any] = {k: v for k, v in args.items() if k != "after" and v}
    ruleset = web().review.api.ruleset
    return render_template("audit_list.html", page=page, args=args, query=query,
                           next_url=url_for("web.audit_list", **query, after=page.next_after)
                           if page.next_after is not None else None,
                           first_url=url_for("web.audit_list", **query) if after else None,
                           rules=sorted(r.id for r in ruleset.rules),
                           actions=sorted(ruleset.terminology.actions), triages=TRIAGES)


@bp.get("/audit/evaluations/<evaluation_id>")
@requires("auditor")
def audit_evaluation(evaluation_id: str) -> str:
    _audit_log()
    trace = web().store.get_evaluation(evaluation_id)
    chain = web().chain.of_record(trace)
    view = web().review.open(evaluation_id)
    titles = web().review.rule_titles
    return render_template("audit_evaluation.html", trace=trace, view=view, chain=chain,
                           picture=graph.svg(trace, titles), titles=titles)


@bp.get("/audit/evaluations/<evaluation_id>/graph.svg")
@requires("auditor")
def audit_graph(evaluation_id: str) -> Response:
    """The derivation graph alone, at full size (the page fits it to its width)."""
    _audit_log()
    trace = web().store.get_evaluation(evaluation_id)
    picture = graph.svg(trace, web().review.rule_titles)
    return Response(str(picture), mimetype="image/svg+xml")


@bp.get("/audit/rules")
@requires("auditor")
def audit_rules() -> str:
    _audit_log()
    today = datetime.now(UTC).date()
    since_text = request.args.get("since") or (today - timedelta(days=30)).isoformat()
    until_text = request.args.get("until") or today.isoformat()
    since, until = _day(since_text, "since"), _day(until_text, "until", end=True)
    review = web().review
    stats = []
    for rule in review.api.ruleset.rules:
        stat = web().store.rule_stats(rule.id, since=since, until=until)
        if stat["firings"] or stat["cards"]:
            stats.append({**stat, "title": rule.title})
    stats.sort(key=lambda s: (-s["firings"], s["rule"]))
    return render_template("audit_rules.html", stats=stats, picture=chart.svg(stats), since=since_text,
                           until=until_text)


@bp.get("/audit/chain")
@requires("auditor")
def audit_chain() -> str:
    _audit_log()
    report = web().chain.fresh()
    return render_template("audit_chain.html", report=report.as_dict(), problem=report.problem)


@bp.get("/audit/export.ndjson")
@requires("auditor")
def audit_export() -> Response:
    _audit_log()
    since = _day(request.args.get("since"), "since")
    until = _day(request.args.get("until"), "until", end=True)
    store = web().store

    def lines() -> Iterator[str]:
        for resource in resources(store.iter_evaluations(since=since, until=until)):
            yield json.dumps(resource, separators=(",", ":"), ensure_ascii=False) + "\n"

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Response(stream_with_context(lines()), mimetype="application/fhir+ndjson",
                    headers={"Content-Disposition": f'attachment; filename="cds-audit-{stamp}.ndjson"'})


# -- helpers ----------------------------------------------------------------------

def _patient_reference(text: str) -> str | None:
    text = text.strip()
    if not text:
        return None
    return text if "/" in text else f"Patient/{text}"


def _day(text: str | None, name: str, *, end: bool = False) -> datetime | None:
    """A date from a form (midnight UTC); ``end`` makes it inclusive (midnight after)."""
    if not text:
        return None
    try:
        day = date.fromisoformat(text.strip())
    except ValueError:
        raise InputError(f"{text[:40]!r} is not a date YYYY-MM-DD", where=name) from None
    moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return moment + timedelta(days=1) if end else moment


def _after(text: str | None) -> int | None:
    if not text:
        return None
    if not text.isdigit() or len(text) > 15:
        raise InputError("not a page position", where="after")
    return int(text)

