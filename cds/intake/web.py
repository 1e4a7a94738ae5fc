"""The clinicians' worklist page, on the web pages' sign-in (cds.web): ``/web/worklist``.

Mounted only when the web pages are on (CDS_WEB_USERS_FILE). It lists every
client's patients whose suggestions changed, most urgent first, and
acknowledges a card with Accept / Override through the same CDS Hooks
feedback use case the review page uses, attributed to the signed-in person.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for

from cds.api.cards import OVERRIDE_REASONS, OVERRIDE_SYSTEM
from cds.errors import CdsError, InputError
from cds.web.review import PATIENT_VIEW, principal_for
from cds.web.signin import current_user, requires
from cds.web.views import protect


def worklist_pages(runtime: Any) -> Blueprint:
    bp = Blueprint("intake_web", __name__, url_prefix="/web/worklist", template_folder="templates")
    protect(bp)

    @bp.get("/")
    @requires("clinician")
    def page() -> str:
        show_all = request.args.get("all") == "1"
        listing = runtime.service.worklist(None, include_acknowledged=show_all, limit=500)
        return render_template("intake_worklist.html", listing=listing, show_all=show_all, reasons=OVERRIDE_REASONS)

    @bp.post("/feedback")
    @requires("clinician")
    def feedback() -> Any:
        user = current_user()
        assert user is not None
        card = request.form.get("card", "")
        outcome = request.form.get("outcome", "")
        item: dict[str, Any] = {"card": card, "outcome": outcome,
                                "outcomeTimestamp": runtime.now().astimezone(UTC).isoformat()}
        try:
            if outcome == "accepted":
                suggestions = [s for s in request.form.getlist("suggestion") if s]
                if not suggestions:
                    raise InputError("this card proposes nothing to accept; override it with a reason", where="outcome")
                item["acceptedSuggestions"] = [{"id": s} for s in suggestions]
            elif outcome == "overridden":
                reason = request.form.get("reason") or ""
                codes = dict(OVERRIDE_REASONS)
                if reason not in codes:
                    raise InputError("choose one of the override reasons", where="reason")
                item["overrideReason"] = {"reason": {"system": OVERRIDE_SYSTEM, "code": reason,
                                                     "display": codes[reason]}}
            else:
                raise InputError("outcome is accepted or overridden", where="outcome")
            current_app.extensions["cds"].api.feedback(PATIENT_VIEW, {"feedback": [item]}, principal_for(user))
        except CdsError as error:
            flash(f"Not recorded: {error.diagnostics}", "error")
        else:
            flash("Override recorded." if outcome == "overridden" else "Accepted: recorded.", "ok")
        return redirect(url_for("intake_web.page"))

    return bp
