"""What the console shows in Japanese: times in JST in the offices' usual form, and the names of
statuses, channels, roles and refusal reasons. Times arrive as ISO 8601 strings with an offset."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any

from services.console.accounts import ROLE_NAMES
from shared.clock import JST, WEEKDAYS_JA, format_jst

__all__ = ["ROLE_NAMES"]


def instant(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value))


def jst(value: Any, end: Any = None) -> str:
    """2026年12月4日(金) 10:00 (with an end: 〜10:30)."""
    start = instant(value)
    if start is None:
        return "—"
    return format_jst(start, instant(end))


def jst_date(value: Any) -> str:
    """2026年12月4日(金)."""
    if isinstance(value, str) and len(value) == 10:
        d = date.fromisoformat(value)
    elif isinstance(value, date) and not isinstance(value, datetime):
        d = value
    else:
        moment = instant(value)
        if moment is None:
            return "—"
        d = moment.astimezone(JST).date()
    return f"{d.year}年{d.month}月{d.day}日({WEEKDAYS_JA[d.weekday()]})"


def jst_iso(value: Any) -> str:
    """The JST calendar day of an instant, as YYYY-MM-DD (to look up per-day facts such as R04)."""
    moment = instant(value)
    return moment.astimezone(JST).date().isoformat() if moment else ""


def jst_time(value: Any) -> str:
    moment = instant(value)
    return moment.astimezone(JST).strftime("%H:%M") if moment else "—"


#: booking's statuses, as staff call them
BOOKING_STATUS = {
    "requested": "調整待ち",
    "awaiting_coordination": "調整待ち（職員）",
    "recoordination_proposed": "代替日時を提示中",
    "alternative_accepted": "代替日時を承諾",
    "declined": "代替日時を辞退",
    "confirmed": "確定",
    "attended": "出席",
    "completed": "完了",
    "cancelled": "キャンセル",
    "rejected": "受付不可",
}
#: the scheduler's coordination statuses (R05)
REQUEST_STATUS = {
    "coordinating": "調整中",
    "proposed": "代替日時を提示中",
    "needs_staff": "職員の調整待ち",
    "declined": "代替日時を辞退（再調整）",
    "hold_expired": "仮押さえ期限切れ（再調整）",
    "confirmed": "確定",
    "cancelled": "キャンセル",
    "completed": "完了",
}
CANCEL_REASON = {
    "person": "本人から",
    "staff": "職員（事務所都合）",
    "no_show": "無断欠席（R08によりキャンセル扱い）",
    "refused": "利用お断り",
    "rejected": "受付不可",
}
CHANNEL = {"phone": "電話", "email": "メール", "portal": "予約サイト"}
APP = {"teams": "Microsoft Teams", "skype": "Skype for Business", "teleoffice": "TeleOffice"}
ATTENDANCE = {"joined": "入室を確認", "contacted": "連絡あり"}
IDENTITY = {
    "name_and_contact": "氏名と連絡先の確認",
    "photo_id": "本人確認書類（カメラ越し）",
    "jobseeker_card": "求職者カード",
    "other": "その他",
}
DISCLOSURE_STATUS = {"requested": "承認待ち", "approved": "承認済み", "rejected": "却下"}


def status_label(booking: dict[str, Any]) -> str:
    """A booking's status as staff say it; a no-show is named as one (R08)."""
    cancellation = booking.get("cancellation") or {}
    if booking.get("status") == "cancelled" and cancellation.get("reason") == "no_show":
        return "無断欠席"
    return BOOKING_STATUS.get(str(booking.get("status")), str(booking.get("status")))


def label(table: dict[str, str], value: Any) -> str:
    return table.get(str(value), str(value)) if value is not None else "—"


SESSION_ENDED = {
    "none": "",
    "ended": "セッションが終了しています。もう一度サインインしてください。",
    "idle": "一定時間操作がなかったため、サインアウトしました。もう一度サインインしてください。",
    "absolute": "サインインから一定時間が経過したため、サインアウトしました。"
    "もう一度サインインしてください。",
    "everywhere": "すべての端末からサインアウトしました。",
    "inactive": "このアカウントは利用できません。",
    "bye": "サインアウトしました。",
}
#: what the console says when a service refuses, by rule; the service's own words follow
RULE_TEXT = {
    "R01": "1回の相談は30分以内です（R01）。",
    "R04": "確定期限（R04：相談日の2開庁日前）を過ぎています。",
    "R05": "日程調整の手順に合いません（R05）。",
    "R07": "この連絡方法でのキャンセルは、規約で受け付けていません（R07）。",
    "R08": "開始時刻から一定時間が過ぎたため、出席として記録できません（R08）。",
    "R11": "開示請求は、登録した人とは別の人が承認または却下します（R11・4つの目の原則）。",
    "R13": "利用のお断りの理由が、事務所の規約に定める事由ではありません（R13）。",
    "R16": "会議アプリまたはルームの条件に合いません（R16）。",
    "R20": "この相談員は申込者の地域を担当していません（R20）。",
}
STATUS_TEXT = {
    401: "サービスがこのコンソールを認証しませんでした。管理者に連絡してください。",
    403: "この操作の権限がありません。",
    404: "対象が見つかりません。",
    409: "現在の状態では、この操作はできません。",
    422: "入力内容に誤りがあります。",
    429: "操作が集中しています。しばらくしてから再度お試しください。",
    503: "サービスに接続できません。しばらくしてから再度お試しください。",
}


def refusal(status: int, rule: str | None, message: str) -> str:
    """A service's refusal in Japanese: by rule where it names one, else by status."""
    if rule and rule in RULE_TEXT:
        return RULE_TEXT[rule]
    for m in re.finditer(r"\bR\d\d\b", message):  # the scheduler names the rule in its detail
        if m.group(0) in RULE_TEXT:
            return RULE_TEXT[m.group(0)]
    return STATUS_TEXT.get(status, "処理できませんでした。")


#: what a page says after an action went through (the `done` of the redirect)
DONE = {
    "confirmed": "予約を確定しました。",
    "proposed": "代替日時を提示しました。本人の回答を待っています。",
    "cancelled": "キャンセルを記録しました。",
    "attended": "出席（入室または連絡）を記録しました。",
    "identity": "本人確認を記録しました。",
    "refused": "利用をお断りしました。",
    "lifted": "お断りを解除しました。",
    "refuse": "審査の結果、利用をお断りしました。",
    "dismiss": "審査を終了しました（お断りしません）。",
    "requested": "開示請求を登録しました。承認または却下は別の担当者が行います。",
    "approved": "開示請求を承認しました。",
    "rejected": "開示請求を却下しました。",
}
