"""Pure device rules: what an event says about the device it came from, and whose device (and token) it is.

A device is known by the id its SDK reports (`context.device.id`); an event without one names no
device (a browser is its anonymous id, not a device). Each field of a device is last-writer-wins on
the event time, the device's profile included: when someone else logs in on a phone, the phone and
its push token move to the newer profile, and a late event from the previous user does not move them
back. A push token belongs to one device: the newest claim on it wins, and the device that loses it
keeps no token. A token a provider called dead stays on its device but is not push-enabled until the
app registers it again through the API.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

from services.profiles.context import WRONG_TYPE, Platform, language_of, zone

FIELDS = ("platform", "app", "app_version", "os_version", "model", "locale", "time_zone", "push_token")
MAX_ID = 512
MAX_TOKEN = 4096
PUSH_TOKEN_WITHOUT_DEVICE = "push_token_without_device"


@dataclass(slots=True)
class DeviceState:
    """One device row as a batch works on it."""

    device_id: str
    profile_id: str
    last_seen: datetime
    platform: str | None = None
    app: str | None = None
    app_version: str | None = None
    os_version: str | None = None
    model: str | None = None
    locale: str | None = None
    time_zone: str | None = None
    push_token: str | None = None
    dead_token: str | None = None  # the token a provider last called dead
    times: dict[str, str] = field(default_factory=dict)  # field (and "profile_id") -> when it was written

    @property
    def push_enabled(self) -> bool:
        return self.push_token is not None and self.push_token != self.dead_token


@dataclass(frozen=True, slots=True)
class DeviceReport:
    """What one event (or API call) says about one device: only the fields it carries."""

    device_id: str
    fields: dict[str, str | None]
    register: bool = False  # an explicit registration: a token called dead before is live again


def _token(value: Any) -> str | None:
    """A push token is text (APNs hex, FCM registration ids, web push endpoints), never a number."""
    return _text(value, MAX_TOKEN) if isinstance(value, str) else None


def _text(value: Any, limit: int = 256) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    text = str(value).strip()
    return text if 0 < len(text) <= limit else None


def reports(
    context: dict[str, Any], traits: dict[str, Any], platform: Platform | None
) -> tuple[list[DeviceReport], list[str]]:
    """The devices an event names (its own, and Braze-shaped `push_tokens` traits); (reports, ignored reasons)."""
    found: list[DeviceReport] = []
    ignored: list[str] = []
    device = context.get("device")
    if isinstance(device, dict) and (device_id := _text(device.get("id"), MAX_ID)) is not None:
        fields: dict[str, str | None] = {}
        if platform is not None:
            fields["platform"] = platform
        app, os_ = context.get("app"), context.get("os")
        for name, section, key in (("app", app, "name"), ("app_version", app, "version"),
                                   ("os_version", os_, "version"), ("model", device, "model")):
            if isinstance(section, dict) and (value := _text(section.get(key))) is not None:
                fields[name] = value
        if isinstance(locale := context.get("locale"), str) and language_of(locale) is not None:
            fields["locale"] = locale.strip()
        if isinstance(tz := context.get("timezone"), str) and zone(tz) is not None:
            fields["time_zone"] = tz
        if (token := device.get("token")) is not None:
            if (text := _token(token)) is not None:
                fields["push_token"] = text
            else:
                ignored.append(WRONG_TYPE)
        found.append(DeviceReport(device_id, fields))
    tokens = traits.get("push_tokens") if traits else None
    if tokens is not None:
        for item in tokens if isinstance(tokens, list) else [tokens]:
            token = _token(item.get("token")) if isinstance(item, dict) else None
            if token is None:
                ignored.append(WRONG_TYPE)
            elif (device_id := _text(item.get("device_id"), MAX_ID)) is None:
                ignored.append(PUSH_TOKEN_WITHOUT_DEVICE)
            else:
                found.append(DeviceReport(device_id, {"push_token": token}))
    return found, ignored


_VALUES = attrgetter("profile_id", "last_seen", "dead_token", *FIELDS)  # what a segment condition may read of a device


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


class Devices:
    """The devices a batch has read (by id and by token) and the rules that change them."""

    def __init__(self, loaded: list[DeviceState]) -> None:
        self.by_id: dict[str, DeviceState] = {d.device_id: d for d in loaded}
        self.by_token: dict[str, str] = {d.push_token: d.device_id for d in loaded if d.push_token}
        self.touched: set[str] = set()

    def apply(self, report: DeviceReport, profile_id: str, at: datetime) -> bool:
        """Apply one report from an event of `profile_id` at `at` (see the module's rules); True if the device
        is new or any of its fields (last seen included) changed."""
        when = _stamp(at)
        device = self.by_id.get(report.device_id)
        before = None if device is None else _VALUES(device)
        if device is None:
            device = self.by_id[report.device_id] = DeviceState(report.device_id, profile_id, at)
        self.touched.add(device.device_id)
        device.last_seen = max(device.last_seen, at)
        self._write(device, "profile_id", profile_id, when)
        for name, value in report.fields.items():
            if name == "push_token" and value is not None:
                self._claim(device, value, when, report.register)
            else:
                self._write(device, name, value, when)
        return before is None or _VALUES(device) != before

    def _write(self, device: DeviceState, name: str, value: Any, when: str) -> bool:
        previous = device.times.get(name)
        if previous is not None and (previous > when or (previous == when and repr(getattr(device, name)) >= repr(value))):
            return False
        setattr(device, name, value)
        device.times[name] = when
        return True

    def _claim(self, device: DeviceState, token: str, when: str, register: bool) -> None:
        """The newest claim on a token wins it; a device that loses its token keeps none (and its claim's time)."""
        mine = device.times.get("push_token")
        if mine is not None and mine > when:
            return  # this device has said something newer about its token
        holder_id = self.by_token.get(token)
        holder = self.by_id.get(holder_id) if holder_id is not None else None
        if holder is not None and holder is not device:
            held = holder.times.get("push_token", "")
            if (held, holder.device_id) > (when, device.device_id):
                self._write(device, "push_token", None, when)  # a newer device holds it: this claim is stale
                return
            holder.push_token = None  # keeps its time: its own later claims still count
            del self.by_token[token]
            self.touched.add(holder.device_id)
        old = device.push_token
        if self._write(device, "push_token", token, when):
            if old is not None and old != token and self.by_token.get(old) == device.device_id:
                del self.by_token[old]
            self.by_token[token] = device.device_id
        if register and device.dead_token == token:
            device.dead_token = None

    def move(self, source: str, target: str) -> None:
        """A profile merged away: its devices are the survivor's."""
        for device in self.by_id.values():
            if device.profile_id == source:
                device.profile_id = target

    def deactivate(self, token: str) -> DeviceState | None:
        """A provider said this token is dead: its device is no longer push-enabled with it."""
        device = self.by_id.get(self.by_token.get(token, ""))
        if device is not None:
            device.dead_token = token
            self.touched.add(device.device_id)
        return device
