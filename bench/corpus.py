"""The benchmark corpus: a deterministic stream of new tickets and threaded replies, held in memory.

A simple conversation model: each step opens a ticket, answers one of the recently
active threads of this run (customer or agent, In-Reply-To/References to earlier
messages, sometimes to one of our notifications the client never saw), or answers
a pre-filled ticket (its stored Message-IDs and/or a ``[#N]`` subject tag). Every
message knows the outcome Postdesk must record for it, so a run can check threading
message by message. Most replies come at least ``QUIET_GAP`` messages after what they
answer; a few quick follow-ups come within ``QUICK_GAP``, so under concurrency some
arrive while the message they answer is still in flight.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from bench import mailtext
from bench.mailtext import Planned
from bench.people import (
    AGENT_DOMAIN, Directory, Org, existing_ack_id, existing_opener_id, existing_subject,
)

BASE_DATE = datetime(2025, 3, 3, 8, 0, tzinfo=timezone(timedelta(hours=1)))
P_NEW, P_EXISTING = 0.45, 0.15
RECENT_THREADS = 300            # replies answer one of the last 300 threads opened
P_QUICK_FOLLOWUP = 0.05         # share of replies sent right after what they answer ...
QUICK_GAP = 8                   # ... at most this many messages later
QUIET_GAP = 64                  # every other reply comes at least this many messages later (when possible)


@dataclass(frozen=True)
class BenchMessage:
    index: int
    message_id: str
    envelope_from: str
    kind: str                      # "new" (opens a ticket) | "reply" (to this run's thread) | "existing"
    root: str | None               # Message-ID of the thread's first message (kind "reply")
    answers: tuple[str, ...]       # this run's Message-IDs it refers to (for the out-of-order analysis)
    existing_ticket: int | None    # kind "existing": the pre-filled ticket it must land on
    wire: bytes                    # the DATA payload, dot-stuffed, with the final ".\r\n"
    html: bool
    attachments: int
    lang: str
    agent: bool

    @property
    def size(self) -> int:
        return len(self.wire)


@dataclass
class _Thread:
    org: Org
    last_index: int
    messages: list[Planned] = field(default_factory=list)


@dataclass(frozen=True)
class Corpus:
    directory: Directory
    messages: tuple[BenchMessage, ...]
    existing: int

    def summary(self) -> dict:
        sizes = sorted(m.size for m in self.messages)
        count = len(sizes) or 1
        return {
            "messages": len(self.messages),
            "new": sum(m.kind == "new" for m in self.messages),
            "replies": sum(m.kind == "reply" for m in self.messages),
            "replies_to_existing": sum(m.kind == "existing" for m in self.messages),
            "from_agents": sum(m.agent for m in self.messages),
            "html_share": round(sum(m.html for m in self.messages) / count, 3),
            "with_attachments": sum(bool(m.attachments) for m in self.messages),
            "german_share": round(sum(m.lang == "de" for m in self.messages) / count, 3),
            "bytes_total": sum(sizes),
            "bytes_median": sizes[len(sizes) // 2] if sizes else 0,
            "bytes_max": sizes[-1] if sizes else 0,
            "organisations": len(self.directory.orgs),
            "accounts": self.directory.account_count(),
        }


def make_corpus(directory: Directory, n_messages: int, seed: int, existing: int) -> Corpus:
    """``n_messages`` messages for a database holding ``existing`` pre-filled tickets."""
    rng = random.Random(f"corpus-{seed}")
    threads: list[_Thread] = []
    messages: list[BenchMessage] = []
    org_weights = [len(org.accounts) for org in directory.orgs]
    for index in range(n_messages):
        draw = rng.random()
        date = BASE_DATE + timedelta(seconds=40 * index)
        if not threads or draw < P_NEW:
            org = rng.choices(directory.orgs, weights=org_weights)[0]
            message = _new_ticket(rng, index, date, org, threads)
        elif existing and draw < P_NEW + P_EXISTING:
            message = _existing_reply(rng, index, date, directory, existing, rng.random())
        else:
            message = _thread_reply(rng, index, date, directory, _pick_thread(rng, threads, index))
        messages.append(message)
    if len({m.message_id for m in messages}) != len(messages):
        raise RuntimeError("corpus Message-IDs collide; change the seed")
    return Corpus(directory, tuple(messages), existing)


def _pick_thread(rng: random.Random, threads: list[_Thread], index: int) -> _Thread:
    """Mostly a thread quiet for a while; sometimes (a quick follow-up) one touched a moment ago."""
    recent = threads[-RECENT_THREADS:]
    if rng.random() < P_QUICK_FOLLOWUP:
        candidates = [t for t in recent if index - t.last_index <= QUICK_GAP]
    else:
        candidates = [t for t in recent if index - t.last_index >= QUIET_GAP]
    return rng.choice(candidates or recent)


def _client(rng: random.Random, org: Org) -> str:
    return org.client if rng.random() < 0.8 else rng.choice(("outlook", "gmail", "thunderbird", "apple"))


def _wants_html(rng: random.Random, client: str) -> bool:
    return rng.random() < {"outlook": 0.75, "gmail": 0.8, "apple": 0.6, "thunderbird": 0.3}[client]


def _new_ticket(rng, index: int, date: datetime, org: Org, threads: list[_Thread]) -> BenchMessage:
    sender = rng.choice(org.accounts)
    client = _client(rng, org)
    colleagues = [a.email for a in org.accounts if a != sender]
    cc = (rng.choice(colleagues),) if colleagues and rng.random() < 0.2 else ()
    if rng.random() < 0.05:
        cc += ("berater@partner-consulting.example",)
    plan = Planned(sender=sender, org_name=org.name, client=client,
                   message_id=mailtext.message_id_for(client, org.domain, rng), date=date,
                   subject=mailtext.new_subject(rng, sender.locale),
                   text=mailtext.new_ticket_text(rng, sender, org.name, with_fields=rng.random() < 0.4),
                   cc=cc, html=_wants_html(rng, client),
                   attachments=mailtext.attachments_for(rng, sender.locale) if rng.random() < 0.25 else ())
    threads.append(_Thread(org, index, [plan]))
    return _finish(rng, index, plan, "new", None, (), None, agent=False)


def _thread_reply(rng, index: int, date: datetime, directory: Directory, thread: _Thread) -> BenchMessage:
    parent = thread.messages[-1] if rng.random() < 0.8 else rng.choice(thread.messages)
    root = thread.messages[0]
    agent = rng.random() < 0.25
    if agent:
        sender, client, domain = rng.choice(directory.agents), "outlook", AGENT_DOMAIN
    else:
        sender = root.sender if rng.random() < 0.7 else rng.choice(thread.org.accounts)
        client, domain = _client(rng, thread.org), thread.org.domain
    chain = [m.message_id for m in thread.messages[:thread.messages.index(parent) + 1]]
    references = chain if len(chain) <= 8 else [chain[0], *chain[-7:]]
    in_reply_to = parent.message_id
    if rng.random() < 0.3:   # an answer to our notification: its Message-ID is unknown to the client
        in_reply_to = f"<{rng.randbytes(12).hex()}.notice@desk.example.com>"
        references = [*references, in_reply_to]
    plan = Planned(sender=sender, org_name=thread.org.name if not agent else "Postdesk Support", client=client,
                   message_id=mailtext.message_id_for(client, domain, rng), date=date,
                   subject=mailtext.reply_subject(root.subject, sender.locale),
                   text=mailtext.reply_text(rng, sender, thread.org.name, parent, agent),
                   in_reply_to=in_reply_to, references=tuple(references), html=_wants_html(rng, client),
                   attachments=mailtext.attachments_for(rng, sender.locale) if rng.random() < 0.1 else ())
    thread.messages.append(plan)
    thread.last_index = index
    answers = tuple(dict.fromkeys([parent.message_id, *chain]))
    return _finish(rng, index, plan, "reply", root.message_id, answers, None, agent)


def _existing_reply(rng, index: int, date: datetime, directory: Directory, existing: int,
                    position: float) -> BenchMessage:
    ticket = 1 + int(position * existing)
    org = directory.org_of_existing(ticket)
    agent = rng.random() < 0.2
    sender = rng.choice(directory.agents) if agent else rng.choice(org.accounts)
    client = "outlook" if agent else _client(rng, org)
    opener = Planned(sender=org.accounts[0], org_name=org.name, client=org.client,
                     message_id=existing_opener_id(ticket, org), date=BASE_DATE - timedelta(days=3),
                     subject=existing_subject(ticket), text=f"Ticket {ticket}")
    evidence = rng.choices(("headers", "both", "tag"), weights=(4, 4, 2))[0]
    tagged = f"[#{ticket}] {opener.subject}"
    if evidence == "tag":
        subject, in_reply_to, references = mailtext.reply_subject(tagged, sender.locale), None, ()
    else:
        subject = mailtext.reply_subject(tagged if evidence == "both" else opener.subject, sender.locale)
        in_reply_to, references = existing_ack_id(ticket), (opener.message_id, existing_ack_id(ticket))
    plan = Planned(sender=sender, org_name=org.name, client=client,
                   message_id=mailtext.message_id_for(client, AGENT_DOMAIN if agent else org.domain, rng),
                   date=date, subject=subject, text=mailtext.reply_text(rng, sender, org.name, opener, agent),
                   in_reply_to=in_reply_to, references=references, html=_wants_html(rng, client))
    return _finish(rng, index, plan, "existing", None, (), ticket, agent)


def _finish(rng, index: int, plan: Planned, kind: str, root: str | None, answers: tuple[str, ...],
            existing_ticket: int | None, agent: bool) -> BenchMessage:
    return BenchMessage(index=index, message_id=plan.message_id, envelope_from=plan.sender.email, kind=kind,
                        root=root, answers=answers, existing_ticket=existing_ticket,
                        wire=mailtext.compose(plan, rng), html=plan.html, attachments=len(plan.attachments),
                        lang=plan.sender.locale, agent=agent)


