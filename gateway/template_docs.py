"""The admins' reference of templates and their variables, generated from ``rendering``'s tables.

``postdesk templates list --markdown`` prints it, and the README carries the same text
between ``<!-- templates:begin -->`` and ``<!-- templates:end -->`` (a test keeps the two
equal), so the documented variables are always the ones ``templates set`` accepts.
Pure: no I/O here.
"""
from __future__ import annotations

from gateway.rendering import ACCOUNT_TEMPLATES, TEMPLATE_CONTEXT, common_context

#: When each template is sent and to whom.
TEMPLATE_NOTES: dict[str, str] = {
    "invitation": "the main contact, when `org add` creates the organisation: what they can do by email",
    "welcome": "a new account (`account add`, `account import`): what they can do by email",
    "ticket_created": "requester and CCs of a new ticket: what was understood, CCs left off, what a problem "
                      "report seems to lack",
    "agent_reply": "requester and CCs, when an agent answers",
    "ticket_solved": "requester and CCs, when an agent solves the ticket: how to reopen, until when",
    "ticket_reopened": "the customer whose reply reopened a solved ticket",
    "followup_created": "the customer whose reply to a closed ticket opened a follow-up ticket",
    "status_update_request": "requester and CCs of a problem that has waited for them too long",
    "ticket_auto_closed": "requester and CCs, when a timer closes the ticket",
    "follower_new_ticket": "accounts that follow the organisation, for each new ticket of a colleague "
                           "(never the author, never a second copy to a requester or CC); carries "
                           "`List-Id` and `List-Unsubscribe`",
    "follow_confirmation": "the sender of a mail to the follow or unfollow address",
    "request_digest": "the sender of a mail to the list address: their tickets with status and last activity",
    "agent_notice": "every agent (but the author), for each customer message",
    "target_warning": "every agent, when a first-response target is about to be missed or was missed",
    "sender_refused": "the sender of a mail refused after it was read from a mailbox (IMAP), when answering "
                      "is safe",
}

#: What each variable holds (fields after the colon are reached with a dot).
VARIABLE_NOTES: dict[str, str] = {
    "recipient": "the person the mail goes to: `name`, `email`, `locale`",
    "ticket": "`number`, `subject`, `status`, `status_label`, `type`, `type_label`, `priority`, "
              "`priority_label`, `module`, `organization`, `requester_name`, `requester_email`, "
              "`created_at`, `followup_of`, `reply_address`",
    "support_address": "the support address customers write to",
    "product_name": "`[desk] product_name` of the configuration",
    "message": "the message the mail is about: `author_name`, `author_email`, `text` (none for a solve "
               "without words)",
    "is_requester": "true for the requester, false for a CC",
    "ccs_added": "addresses added to the ticket as CCs",
    "ccs_refused": "addresses left off, each with `email` and `reason` (`not_registered`, "
                   "`other_organization`, `inactive`, `shared_address`)",
    "priority_ignored": "true when a priority was given on a service request",
    "module_unknown": "a module name that is not in `[desk] modules`, else none",
    "modules": "the module names of `[desk] modules`",
    "missing_info": "for problems, what the report seems to lack: `har_file`, `affected_users`, "
                    "`browser_details`, `page_and_devices`",
    "reopen_until": "until when a reply reopens the ticket (a date; show it with the `date` filter)",
    "previous": "the closed ticket of a follow-up: `number`, `subject`",
    "event": "`new_ticket`, `customer_reply`, `reopened` or `followup`",
    "attachments": "files of the message, each with `filename` and `size` (bytes; the `filesize` filter "
                   "shows it)",
    "commands": "the command addresses: `follow`, `unfollow`, `list`",
    "organization": "`name`, `package`, `accounts_allowed`, `main_contact`",
    "following": "whether the account follows its organisation now",
    "changed": "whether the command changed anything",
    "sections": "the lists asked for, each with `scope` (`mine`, `cc` or `org`), `tickets` (each with "
                "`number`, `subject`, `status`, `status_label`, `type`, `type_label`, `requester_name`, "
                "`requester_email`, `created_at`, `updated_at`) and `more` (how many were left out)",
    "waiting_days": "how many days the ticket has waited for the customer",
    "close_after_days": "how many days after this request the ticket closes without an update",
    "close_at": "when the ticket closes without an update (a date)",
    "rule": "the name of the rule that applied (e.g. `reopen-window-ended`, `sender-unknown`)",
    "days": "the number of days of the rule that applied",
    "stage": "`due_soon` (the target is near) or `overdue`",
    "due_at": "when the first-response target is due (a date)",
    "hours_left": "support hours left until the target (negative: overdue)",
    "original_subject": "the subject of the refused mail",
}

_MISSING = "(not described yet)"


def variables(name: str) -> list[str]:
    """Every variable template ``name`` may use, common ones first."""
    common = [v for v in ("recipient", "ticket", "support_address", "product_name") if v in common_context(name)]
    return common + sorted(TEMPLATE_CONTEXT[name])


def markdown() -> str:
    """The README section: one table of templates, one of variables."""
    lines = ["| template | sent to, and when | variables |", "| --- | --- | --- |"]
    for name in sorted(TEMPLATE_CONTEXT):
        kind = " (no ticket)" if name in ACCOUNT_TEMPLATES else ""
        names = ", ".join(f"`{v}`" for v in variables(name))
        lines.append(f"| `{name}`{kind} | {TEMPLATE_NOTES.get(name, _MISSING)} | {names} |")
    lines += ["", "| variable | what it holds |", "| --- | --- |"]
    used = sorted({v for name in TEMPLATE_CONTEXT for v in variables(name)})
    lines += [f"| `{v}` | {VARIABLE_NOTES.get(v, _MISSING)} |" for v in used]
    return "\n".join(lines) + "\n"
