"""How an office's cancellation rules (R07) are worded for the person, once for every service.

The booking service words them in a refusal (`how_to_cancel`), the notifier in every mail that
confirms or reminds; both read the channels, their labels and the way alternatives are listed here.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.policy import Channel, OfficePolicy


@dataclass(frozen=True)
class CancelGuidance:
    """R07: how this office takes cancellations, phrased from its policy."""

    channels: list[str]
    same_day: list[str] | None  # None: the same channels also on the day itself

    @property
    def channels_text(self) -> str:
        return join_or(self.channels)

    @property
    def same_day_text(self) -> str:
        return join_or(self.same_day or [])


def join_or(items: list[str]) -> str:
    """A、B又はC — the way the terms list alternatives."""
    if len(items) <= 1:
        return "".join(items)
    return "、".join(items[:-1]) + "又は" + items[-1]


def cancel_guidance(policy: OfficePolicy) -> CancelGuidance:
    channels = [channel_label(c, policy) for c in policy.cancellation.channels]
    same_day = [channel_label(c, policy) for c in policy.cancellation.same_day_channels]
    return CancelGuidance(channels, None if same_day == channels else same_day)


def channel_label(channel: Channel, policy: OfficePolicy, *, short: bool = False) -> str:
    """The channel as the person reads it: with the office's number or address, or (`short`) by name."""
    if channel is Channel.PHONE:
        return "電話" if short else f"電話（{policy.phone}）"
    if channel is Channel.EMAIL and policy.email and not short:
        return f"メール（{policy.email}）"
    if channel is Channel.EMAIL:
        return "メール"
    return "ウェブサイト" if short else "お申込みいただいたウェブサイト"


def how_to_cancel(policy: OfficePolicy, same_day: bool) -> str:
    """R07 in one line (a refusal's details): the channels that reach the office, with its number and
    address, and the narrower ones on the day itself."""
    channels = policy.cancellation.same_day_channels if same_day else policy.cancellation.channels
    ways = join_or([channel_label(c, policy) for c in channels])
    text = f"キャンセルは{ways}で{policy.name}へご連絡ください。"
    if set(policy.cancellation.same_day_channels) != set(policy.cancellation.channels):
        same = join_or([channel_label(c, policy, short=True) for c in policy.cancellation.same_day_channels])
        text += f"相談当日のキャンセルは{same}のみです。"
    return text
