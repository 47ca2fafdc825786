"""``org.roost.Backend1.Contacts``: a profile's roster and presence subscription requests."""

from typing import Annotated

from dbus_fast.annotations import DBusBool, DBusDict, DBusSignature, DBusStr
from dbus_fast.service import dbus_method, dbus_signal

from roost.bridge.constants import CONTACTS_INTERFACE
from roost.bridge.interfaces.base import RoostInterface, name_args, roost_method
from roost.bridge.variants import plain, to_record, to_records
from roost.service.backend import Backend
from roost.service.events import ContactChanged, Event, SubscriptionRequested

DBusRecords = Annotated[list[DBusDict], DBusSignature("aa{sv}")]
_ContactChangedArgs = Annotated[tuple[str, DBusDict], DBusSignature("sa{sv}")]
_TwoStr = Annotated[tuple[str, str], DBusSignature("ss")]


class ContactsInterface(RoostInterface):
    """The roster of each profile (stored, so listed offline too), its changes, and the
    presence subscription requests that wait for the person's answer.

    An empty ``profile`` is the default profile; a ``jid`` is a contact's bare JID.
    """

    def __init__(self, backend: Backend) -> None:
        super().__init__(CONTACTS_INTERFACE, backend)
        self._unsubscribe = backend.events.subscribe(self._on_event)

    def close(self) -> None:
        """Stop relaying the backend's events as signals."""
        self._unsubscribe()

    def _on_event(self, event: Event) -> None:
        if isinstance(event, ContactChanged):
            self.ContactChanged(event.profile, to_record(event.contact))
        elif isinstance(event, SubscriptionRequested):
            self.SubscriptionRequest(event.profile, event.jid)

    @dbus_method()
    @roost_method
    async def List(self, profile: DBusStr) -> DBusRecords:
        """The profile's contacts, sorted by JID; the stored roster while offline."""
        return to_records(await self.backend.contacts.list(profile))

    @dbus_method()
    @roost_method
    async def ListRequests(self, profile: DBusStr) -> DBusRecords:
        """Presence subscription requests waiting for Authorize, oldest first."""
        return to_records(await self.backend.contacts.list_requests(profile))

    @dbus_method()
    @roost_method
    async def Add(self, profile: DBusStr, jid: DBusStr, options: DBusDict) -> None:
        """Add a contact or change its name and groups; unless ``subscribe`` is false,
        also ask for its presence."""
        await self.backend.contacts.add(profile, jid, plain(options))

    @dbus_method()
    @roost_method
    async def Remove(self, profile: DBusStr, jid: DBusStr) -> None:
        """Remove a contact (the server cancels the subscriptions both ways)."""
        await self.backend.contacts.remove(profile, jid)

    @dbus_method()
    @roost_method
    async def Authorize(self, profile: DBusStr, jid: DBusStr, accept: DBusBool) -> None:
        """Answer a presence subscription request: approve it, or refuse it (refusing
        also revokes a subscription granted before)."""
        await self.backend.contacts.authorize(profile, jid, accept)

    @dbus_signal()
    def ContactChanged(self, profile: str, contact: DBusDict) -> _ContactChangedArgs:
        """A contact was added, changed, or (``removed`` true) left the roster."""
        return profile, contact

    @dbus_signal()
    def SubscriptionRequest(self, profile: str, jid: str) -> _TwoStr:
        """``jid`` asks to see the profile's presence; it waits for Authorize."""
        return profile, jid


name_args(ContactsInterface.List, "contacts")
name_args(ContactsInterface.ListRequests, "requests")
name_args(ContactsInterface.ContactChanged, "profile", "contact")
name_args(ContactsInterface.SubscriptionRequest, "profile", "jid")
