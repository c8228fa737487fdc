"""What an accepted message does to tickets: open one, add to one, or open a follow-up.

Called by ``pipeline.process_one`` inside its transaction. Life-cycle decisions
come from the pure ``lifecycle`` module; this module carries them out in storage
and hands the notices to ``mailer``.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session

from gateway import lifecycle, notifications, targets
from gateway.checklist import missing_information
from gateway.classify import Classification, is_role_address
from gateway.config import Settings
from gateway.fields import parse_agent_commands, parse_ticket_fields
from gateway.hours import support_hours
from gateway.mailer import Deps, account_recipient, agent_recipients, queue, recipient_for_agent, ticket_facts
from gateway.notifications import MessageFacts, Recipient
from gateway.parsing import ParsedMessage
from gateway.quotes import VisibleText
from gateway.subjects import remove_ticket_tags, strip_reply_prefixes, subject_from_text
from gateway.threader import ThreadMatch
from gateway.tokens import plus_token
from storage import queries
from storage import tickets as store
from storage.models import Account, Inbound, Organization, Ticket


@dataclass(frozen=True)
class Sender:
    email: str
    name: str
    is_agent: bool
    account: Account | None
    organization: Organization | None   # held for the whole message: its later lookups need no query
    recipient: Recipient

    @property
    def org_id(self) -> int | None:
        return self.organization.id if self.organization is not None else None

    @property
    def org_name(self) -> str | None:
        return self.organization.name if self.organization is not None else None

    @classmethod
    def load(cls, session: Session, email: str, display_name: str, settings: Settings,
             agent: queries.AgentName | None) -> "Sender":
        """The sender of an accepted message; ``agent``: the agent of ``email`` as ``queries.author_of`` found it."""
        if agent is not None:
            return cls(email, agent.name or display_name, True, None, None, recipient_for_agent(agent))
        account, org = queries.account_with_organization(session, email)
        if not account.name and display_name.strip():
            # An account registered without a name takes the one its owner's mail client shows,
            # so greetings read "Jana Müller" rather than an address.
            account.name = " ".join(display_name.split())[:120]
            session.add(account)
        return cls(email, account.name or display_name, False, account, org,
                   account_recipient(account, org, settings, "customer"))


def open_new_ticket(session: Session, deps: Deps, inbound: Inbound, parsed: ParsedMessage, sender: Sender,
                    body: VisibleText, now, followup_of: Ticket | None = None) -> int:
    """Open a ticket (or a follow-up of ``followup_of``) from a customer's mail; returns its number."""
    desk = deps.settings.desk
    text = body.full_text if followup_of is None else body.text
    fields = parse_ticket_fields(text, desk.modules)
    type_ = fields.type if fields.type_given or followup_of is None else followup_of.type
    priority = fields.priority if type_ == "problem" else None
    if followup_of is not None and not fields.priority and type_ == followup_of.type:
        priority = followup_of.priority
    module = fields.module or (followup_of.module if followup_of is not None else None)
    subject = _ticket_subject(parsed.subject, fields.text)
    # A new ticket: the customer just wrote, and the package's first-response target starts.
    ticket = store.open_ticket(session, org_id=sender.org_id, requester_id=sender.account.id, subject=subject,
                               type_=type_, priority=priority, module=module, now=now,
                               followup_of=followup_of.id if followup_of else None, last_customer_at=now,
                               first_response_due_at=_first_response_due(deps.settings, sender.organization, now))
    added, refused = _sort_ccs(session, deps, parsed, sender)
    queries.add_ccs(session, ticket.id, added)
    store.add_message(session, ticket, author_email=sender.email, author_kind="customer",
                      message_id=parsed.message_id, in_reply_to=parsed.in_reply_to, references=parsed.references,
                      subject=parsed.subject, text=fields.text.strip() or text, full_text=body.full_text,
                      strip_rule="first-message-kept" if followup_of is None else body.rule,
                      internal=False, inbound_id=inbound.id, now=now, attachments=parsed.attachments)
    queries.add_event(session, ticket.id, now, sender.email, "created",
                      f"opened by mail; type {type_}, priority {priority or 'none'}, module {module or 'none'}")
    extra = {
        "ccs_added": [a.email for a in added], "ccs_refused": refused,
        "priority_ignored": bool(fields.priority_given) and type_ != "problem",
        "module_unknown": fields.module_given if fields.module_unknown else None,
        "modules": list(desk.modules),
        "missing_info": missing_information(fields.text, [a.filename for a in parsed.attachments])
        if type_ == "problem" else [],
    }
    notices = ("ticket_created", "agent_notice:new_ticket", "follower_new_ticket")
    if followup_of is not None:
        extra["previous"] = {"number": followup_of.id, "subject": followup_of.subject}
        notices = ("followup_created", "agent_notice:followup", "follower_new_ticket")
        queries.add_event(session, followup_of.id, now, sender.email, "followup",
                          f"follow-up #{ticket.id} opened by a reply after the ticket was closed")
    # The ticket's only message is the one stored above: its thread history needs no query.
    _notify(session, deps, ticket, notices, sender, fields.text, parsed, extra, now,
            history=queries.first_message_history(sender.email, parsed.message_id))
    return ticket.id


def _first_response_due(settings: Settings, org: Organization, now):
    """When the first answer to a ticket opened now is due under the organisation's package."""
    return targets.first_response_due(now, org.package, support_hours(settings.hours), settings.targets)


def _ticket_subject(subject: str, text: str) -> str:
    cleaned = strip_reply_prefixes(remove_ticket_tags(subject or "")).strip()
    return cleaned or subject_from_text(text)


def _sort_ccs(session: Session, deps: Deps, parsed: ParsedMessage, sender: Sender):
    """Split the mail's other addressees into accounts added as CCs and addresses left off (with a reason code)."""
    added: list[queries.AccountRef] = []
    refused: list[dict] = []
    support = deps.settings.smtp.support_address
    others = [address for address in dict.fromkeys([*parsed.to, *parsed.cc])
              if address != sender.email and plus_token(address, support) is None]
    agents, accounts = queries.people_among(session, others)
    for address in others:
        if address.lower() in agents:
            continue
        account = accounts.get(address.lower())
        reason = _cc_refusal(account, address, sender, deps.settings)
        if reason:
            refused.append({"email": address, "reason": reason})
        elif account not in added:
            added.append(account)
    return added, refused


def _cc_refusal(account: queries.AccountRef | None, address: str, sender: Sender, settings: Settings) -> str | None:
    if is_role_address(address, settings.desk.shared_local_parts):
        return "shared_address"
    if account is None:
        return "not_registered"
    if account.organization_id != sender.org_id:
        return "other_organization"
    if not account.active:
        return "inactive"
    return None


def on_existing_ticket(session: Session, deps: Deps, inbound: Inbound, parsed: ParsedMessage, sender: Sender,
                       classification: Classification, match: ThreadMatch, body: VisibleText, now):
    # Lock the row (PostgreSQL) so a timer firing on this ticket at the same moment waits or skips it.
    ticket = session.get(Ticket, match.ticket_number, with_for_update=True, populate_existing=True)
    automatic = classification.auto_generated or classification.bounce
    if sender.is_agent:
        return _agent_message(session, deps, inbound, parsed, sender, ticket, match, body, now, automatic)
    transition = lifecycle.apply(store.state_of(ticket), lifecycle.CustomerMessage(auto_generated=automatic),
                                 now, deps.settings.lifecycle)
    if transition.followup:
        number = open_new_ticket(session, deps, inbound, parsed, sender, body, now, followup_of=ticket)
        return "followup_created", (f"follow-up #{number} of #{ticket.id} ({ticket.status}): "
                                    f"{match.reason}"), number
    added, _ = _sort_ccs(session, deps, parsed, sender) if not automatic else ([], [])
    if match.via == "answered-by":
        added += _late_parent(session, ticket, parsed, sender, now)
    queries.add_ccs(session, ticket.id, added)
    store.add_message(session, ticket, author_email=sender.email, author_kind="customer",
                      message_id=parsed.message_id, in_reply_to=parsed.in_reply_to, references=parsed.references,
                      subject=parsed.subject, text=body.text, full_text=body.full_text, strip_rule=body.rule,
                      internal=not transition.public, inbound_id=inbound.id, now=now,
                      attachments=parsed.attachments)
    _record(session, ticket, transition, sender.email, now)
    store.save_state(session, ticket, transition.state, now)
    _notify(session, deps, ticket, transition.notices, sender, body.text, parsed, {}, now, automatic=automatic)
    note = " as an internal note (automatic mail)" if automatic else ""
    return "reply", f"{match.reason}{note}", ticket.id


def _late_parent(session: Session, ticket: Ticket, parsed: ParsedMessage, sender: Sender,
                 now) -> list[Account | queries.AccountRef]:
    """A message that a reply overtook joins the reply's ticket; its author becomes a CC (gateway/arrival.py)."""
    queries.add_event(session, ticket.id, now, sender.email, "late-parent",
                      f"{parsed.message_id} arrived after a reply to it, which is on this ticket")
    return [sender.account] if sender.account.id != ticket.requester_id else []


def _agent_message(session, deps, inbound, parsed, sender, ticket: Ticket, match, body: VisibleText, now,
                   automatic: bool = False):
    commands = parse_agent_commands(body.text, deps.settings.desk.modules)
    if automatic:   # an agent's out-of-office reply stays an internal note and tells no one
        event = lifecycle.AgentMessage(has_text=bool(commands.text.strip()), internal=True)
    else:
        event = lifecycle.AgentMessage(
            has_text=bool(commands.text.strip()), internal=commands.note,
            status=lifecycle.Status(commands.status) if commands.status in lifecycle.AGENT_SETTABLE else None,
            priority=commands.priority, type=commands.type,
            module=commands.module if commands.module in deps.settings.desk.modules else None,
        )
    transition = lifecycle.apply(store.state_of(ticket), event, now, deps.settings.lifecycle)
    store.add_message(session, ticket, author_email=sender.email, author_kind="agent",
                      message_id=parsed.message_id, in_reply_to=parsed.in_reply_to, references=parsed.references,
                      subject=parsed.subject, text=commands.text.strip(), full_text=body.full_text,
                      strip_rule=body.rule, internal=not transition.public, inbound_id=inbound.id, now=now,
                      attachments=parsed.attachments)
    _record(session, ticket, transition, sender.email, now)
    for error in commands.errors:
        queries.add_event(session, ticket.id, now, sender.email, "command-error", error)
    store.save_state(session, ticket, transition.state, now)
    extra = {"reopen_until": lifecycle.reopen_deadline(transition.state, deps.settings.lifecycle)}
    _notify(session, deps, ticket, transition.notices, sender, commands.text.strip(), parsed, extra, now)
    kind = "internal note" if not transition.public else "agent reply"
    return "reply", f"{match.reason} ({kind})", ticket.id


def _record(session: Session, ticket: Ticket, transition: lifecycle.Transition, actor: str, now) -> None:
    for change in transition.changes:
        queries.add_event(session, ticket.id, now, actor, "change", change)


def _notify(session, deps, ticket: Ticket, notices, sender: Sender, text: str, parsed: ParsedMessage,
            extra: dict, now, automatic: bool = False, history: queries.ThreadHistory | None = None) -> None:
    if not notices:
        return
    facts = ticket_facts(session, ticket, deps)
    message = MessageFacts(sender.email, sender.name or parsed.from_name, text)
    extra = {"attachments": [{"filename": a.filename, "size": len(a.content)} for a in parsed.attachments],
             **extra}
    planned = notifications.plan(notices, facts, message, agent_recipients(session),
                                 author=sender.recipient, extra=extra, author_automatic=automatic)
    queue(session, deps, ticket, facts, planned, now, history)
