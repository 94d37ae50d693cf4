"""The sandbox accounts' mailboxes, kept the way Gmail keeps mail: messages with labels.

A message has labels (``INBOX``, ``SENT``, ``SPAM``, ``TRASH``); an IMAP folder is a view of the
messages with its label (``[Gmail]/All Mail``: everything but Spam and Trash), each with its own
UIDs. What Gmail does on IMAP's ``EXPUNGE`` follows from that (with its default settings): in a
label folder the label goes (the message stays in All Mail), in All Mail the message goes to
Trash, in Spam and Trash it is deleted for good. Moving to Trash, then expunging there, is how a
client deletes a message on Gmail.

Thread-safe: the sandbox's servers use it from their event loop, tests from theirs.
"""

from __future__ import annotations

import email
import email.policy
import itertools
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = ["FOLDER_NAMES", "Folder", "MailStore", "StoredMessage"]

INBOX, SENT, SPAM, TRASH = "INBOX", "SENT", "SPAM", "TRASH"

MAILBOX_LIMIT = 1000
"""Messages kept per account; the oldest go first (the sandbox is for tests, not an archive)."""

#: Gmail's folder names by language (the display language of the account), without ``[Gmail]/``.
FOLDER_NAMES: dict[str, dict[str, str]] = {
    "en": {"all": "All Mail", "sent": "Sent Mail", "junk": "Spam", "trash": "Trash", "drafts": "Drafts"},
    "ja": {
        "all": "すべてのメール",
        "sent": "送信済みメール",
        "junk": "迷惑メール",
        "trash": "ゴミ箱",
        "drafts": "下書き",
    },
}


@dataclass
class StoredMessage:
    """One message of an account: its bytes as delivered, labels, flags and arrival time."""

    number: int
    data: bytes = field(repr=False)
    labels: set[str] = field(default_factory=set)
    flags: set[str] = field(default_factory=set)
    internaldate: float = field(default_factory=time.time)
    popped: bool = False
    """Downloaded over POP3 once (Gmail then leaves it out of later POP3 sessions)."""

    def header(self, name: str) -> list[str]:
        parsed = email.message_from_bytes(self.header_bytes, policy=email.policy.compat32)
        return [" ".join(str(value).split()) for value in parsed.get_all(name) or []]  # unfolded

    @property
    def header_bytes(self) -> bytes:
        end = self.data.find(b"\r\n\r\n")
        return self.data if end < 0 else self.data[: end + 4]


@dataclass(frozen=True)
class Folder:
    """An IMAP folder of the sandbox: its name, special-use flag and which messages it shows."""

    name: str
    special_use: str
    role: str
    selectable: bool = True

    def shows(self, message: StoredMessage) -> bool:
        labels = message.labels
        if self.role == "trash":
            return TRASH in labels
        if TRASH in labels:
            return False
        if self.role == "junk":
            return SPAM in labels
        if SPAM in labels:
            return False
        if self.role == "all":
            return True
        return {"inbox": INBOX, "sent": SENT}.get(self.role, "") in labels


def gmail_folders(language: str = "en") -> list[Folder]:
    names = FOLDER_NAMES.get(language, FOLDER_NAMES["en"])
    return [
        Folder("INBOX", "", "inbox"),
        Folder("[Gmail]", "", "", selectable=False),
        Folder(f"[Gmail]/{names['all']}", "\\All", "all"),
        Folder(f"[Gmail]/{names['drafts']}", "\\Drafts", "drafts"),
        Folder(f"[Gmail]/{names['sent']}", "\\Sent", "sent"),
        Folder(f"[Gmail]/{names['junk']}", "\\Junk", "junk"),
        Folder(f"[Gmail]/{names['trash']}", "\\Trash", "trash"),
    ]


class _View:
    """The UIDs of one folder: a message gets a new UID each time it enters the folder."""

    def __init__(self) -> None:
        self.uid_of: dict[int, int] = {}  # message number -> uid
        self.uidnext = 1
        self.deleted: set[int] = set()  # UIDs marked \\Deleted in this folder


class Mailbox:
    """One account's messages and folder views."""

    def __init__(self, folders: list[Folder]) -> None:
        self.folders = {folder.name: folder for folder in folders}
        self.messages: dict[int, StoredMessage] = {}
        self.views = {folder.name: _View() for folder in folders if folder.selectable}

    def sync(self, message: StoredMessage | None = None) -> None:
        """Bring the folder views in line with the labels (of ``message``, or of every message)."""
        messages = [message] if message is not None else list(self.messages.values())
        for name, view in self.views.items():
            folder = self.folders[name]
            for stored in messages:
                inside = stored.number in self.messages and folder.shows(stored)
                if inside and stored.number not in view.uid_of:
                    view.uid_of[stored.number] = view.uidnext
                    view.uidnext += 1
                elif not inside and stored.number in view.uid_of:
                    view.deleted.discard(view.uid_of.pop(stored.number))
            if message is None:
                for number in [n for n in view.uid_of if n not in self.messages]:
                    view.deleted.discard(view.uid_of.pop(number))


class MailStore:
    """The mailboxes of the sandbox's accounts (``language``: the names of Gmail's folders)."""

    def __init__(self, users: Iterable[str], *, language: str = "en", limit: int = MAILBOX_LIMIT) -> None:
        self.uidvalidity = 1
        self.language = language
        self.limit = limit
        self._lock = threading.RLock()
        self._numbers = itertools.count(1)
        self._mailboxes = {user.lower(): Mailbox(gmail_folders(language)) for user in users}
        self._listeners: list[Callable[[], None]] = []

    # -- listeners (IMAP IDLE) --
    def listen(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` after every change; returns the function that stops it."""
        with self._lock:
            self._listeners.append(callback)

        def stop() -> None:
            with self._lock:
                if callback in self._listeners:
                    self._listeners.remove(callback)

        return stop

    def _changed(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for callback in listeners:
            callback()

    # -- accounts and folders --
    def has(self, user: str) -> bool:
        return user.lower() in self._mailboxes

    def _box(self, user: str) -> Mailbox:
        return self._mailboxes[user.lower()]

    def folders(self, user: str) -> list[Folder]:
        with self._lock:
            return list(self._box(user).folders.values())

    def folder(self, user: str, name: str) -> Folder | None:
        """The folder called ``name`` (``INBOX`` in any case)."""
        with self._lock:
            folders = self._box(user).folders
            if name.upper() == "INBOX":
                return folders["INBOX"]
            return folders.get(name)

    def folder_by_role(self, user: str, role: str) -> Folder:
        """The folder of ``role`` (``KeyError`` if there is none)."""
        with self._lock:
            for folder in self._box(user).folders.values():
                if folder.role == role:
                    return folder
        raise KeyError(role)

    # -- delivery --
    def deliver(self, user: str, data: bytes, labels: Iterable[str] = (INBOX,)) -> StoredMessage:
        """Add a message to ``user``'s mailbox with ``labels``."""
        with self._lock:
            box = self._box(user)
            message = StoredMessage(next(self._numbers), data, set(labels))
            box.messages[message.number] = message
            while len(box.messages) > self.limit:
                del box.messages[min(box.messages)]
                box.sync()
            box.sync(message)
        self._changed()
        return message

    def clear(self) -> None:
        """Empty every mailbox and start the UIDs again (under a new UIDVALIDITY, as IMAP requires)."""
        with self._lock:
            self.uidvalidity += 1
            for user in list(self._mailboxes):
                self._mailboxes[user] = Mailbox(gmail_folders(self.language))
        self._changed()

    # -- reading --
    def uids(self, user: str, folder: str) -> list[int]:
        """The UIDs of ``folder``, ascending."""
        with self._lock:
            return sorted(self._box(user).views[folder].uid_of.values())

    def uidnext(self, user: str, folder: str) -> int:
        with self._lock:
            return self._box(user).views[folder].uidnext

    def get(self, user: str, folder: str, uid: int) -> StoredMessage | None:
        with self._lock:
            box = self._box(user)
            for number, found in box.views[folder].uid_of.items():
                if found == uid:
                    return box.messages.get(number)
            return None

    def is_deleted(self, user: str, folder: str, uid: int) -> bool:
        with self._lock:
            return uid in self._box(user).views[folder].deleted

    def messages(self, user: str, folder: str = "INBOX") -> list[StoredMessage]:
        """The messages a folder shows, oldest first (for tests). ``folder`` is a folder's name or
        its role: ``inbox``, ``all``, ``sent``, ``junk``, ``trash``."""
        with self._lock:
            box = self._box(user)
            found = self.folder(user, folder) or self.folder_by_role(user, folder)
            view = box.views[found.name]
            return [box.messages[n] for n, _uid in sorted(view.uid_of.items(), key=lambda item: item[1])]

    def all_messages(self, user: str) -> list[StoredMessage]:
        """Every message of the account, Spam and Trash included (for tests)."""
        with self._lock:
            return list(self._box(user).messages.values())

    # -- changes --
    def set_flags(self, user: str, folder: str, uids: Iterable[int], flags: set[str], mode: str) -> None:
        """``mode``: ``+`` adds, ``-`` removes, ``=`` replaces. ``\\Deleted`` belongs to the folder."""
        with self._lock:
            box = self._box(user)
            view = box.views[folder]
            deleted = any(f.lower() == "\\deleted" for f in flags)
            others = {f for f in flags if f.lower() != "\\deleted"}
            for uid in uids:
                message = self.get(user, folder, uid)
                if message is None:
                    continue
                if mode == "+":
                    message.flags |= others
                    if deleted:
                        view.deleted.add(uid)
                elif mode == "-":
                    message.flags -= others
                    if deleted:
                        view.deleted.discard(uid)
                else:
                    message.flags = set(others)
                    if deleted:
                        view.deleted.add(uid)
                    else:
                        view.deleted.discard(uid)

    def expunge(self, user: str, folder: str, uids: Iterable[int] | None = None) -> list[int]:
        """Expunge the messages marked deleted (only those of ``uids`` when given), Gmail's way."""
        with self._lock:
            box = self._box(user)
            view = box.views[folder]
            chosen = sorted(view.deleted if uids is None else view.deleted & set(uids))
            role = box.folders[folder].role
            for uid in chosen:
                message = self.get(user, folder, uid)
                if message is None:
                    continue
                if role in ("junk", "trash"):
                    del box.messages[message.number]
                elif role == "all":
                    message.labels.add(TRASH)
                else:
                    message.labels.discard({"inbox": INBOX, "sent": SENT}.get(role, ""))
                box.sync(message)
            box.sync()
        self._changed()
        return chosen

    def copy(
        self, user: str, folder: str, uids: Iterable[int], target: str, *, move: bool = False
    ) -> list[tuple[int, int]]:
        """Copy (or move) messages to ``target`` the way Gmail does: by labels. Returns
        (source UID, target UID) pairs."""
        with self._lock:
            box = self._box(user)
            source_role, target_role = box.folders[folder].role, box.folders[target].role
            pairs = []
            for uid in sorted(set(uids)):
                message = self.get(user, folder, uid)
                if message is None:
                    continue
                if target_role == "trash":
                    message.labels.add(TRASH)
                elif target_role == "junk":
                    message.labels.add(SPAM)
                else:
                    message.labels -= {TRASH, SPAM} if source_role in ("trash", "junk") else set()
                    label = {"inbox": INBOX, "sent": SENT}.get(target_role)
                    if label:
                        message.labels.add(label)
                if move and source_role in ("inbox", "sent") and target_role not in ("trash", "junk"):
                    message.labels.discard({"inbox": INBOX, "sent": SENT}[source_role])
                box.sync(message)
                new_uid = box.views[target].uid_of.get(message.number)
                if new_uid is not None:
                    pairs.append((uid, new_uid))
        self._changed()
        return pairs

    def pop_maildrop(self, user: str) -> list[StoredMessage]:
        """What a POP3 session sees: inbox messages not yet downloaded over POP3, oldest first."""
        with self._lock:
            return [m for m in self.messages(user, "INBOX") if not m.popped]

    def pop_commit(self, user: str, downloaded: Iterable[StoredMessage], deleted: Iterable[StoredMessage]) -> None:
        """The end of a POP3 session (QUIT): downloaded messages are not shown again; deleted ones
        go to Trash (Gmail's "delete Gmail's copy" setting)."""
        with self._lock:
            box = self._box(user)
            for message in downloaded:
                message.popped = True
            for message in deleted:
                if message.number in box.messages:
                    message.labels.add(TRASH)
                    box.sync(message)
        self._changed()
