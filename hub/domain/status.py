"""The dossier status machine (TrangThaiHoSo 1-10 of the national portal) with its explicit transition table.

The same table is published for peers in contracts/national_portal/trang_thai_transitions.json; a test keeps
the two equal.
"""

from __future__ import annotations

from enum import IntEnum

from hub.domain.errors import InvalidTransition


class DossierStatus(IntEnum):
    NEW = 1  # Mới đăng ký - newly filed
    ACCEPTED = 2  # Được tiếp nhận - accepted
    REFUSED = 3  # Không được tiếp nhận - refused
    PROCESSING = 4  # Đang xử lý - processing
    SUPPLEMENT_REQUESTED = 5  # Yêu cầu bổ sung giấy tờ - supplement requested
    PAYMENT_REQUESTED = 6  # Yêu cầu thực hiện nghĩa vụ tài chính - payment requested
    WITHDRAWN = 7  # Công dân yêu cầu rút hồ sơ - withdrawn by the citizen
    STOPPED = 8  # Dừng xử lý - processing stopped
    PROCESSED = 9  # Đã xử lý xong - processed
    RESULT_RETURNED = 10  # Đã trả kết quả - result returned


VIETNAMESE_NAMES: dict[DossierStatus, str] = {
    DossierStatus.NEW: "Mới đăng ký",
    DossierStatus.ACCEPTED: "Được tiếp nhận",
    DossierStatus.REFUSED: "Không được tiếp nhận",
    DossierStatus.PROCESSING: "Đang xử lý",
    DossierStatus.SUPPLEMENT_REQUESTED: "Yêu cầu bổ sung giấy tờ",
    DossierStatus.PAYMENT_REQUESTED: "Yêu cầu thực hiện nghĩa vụ tài chính",
    DossierStatus.WITHDRAWN: "Công dân yêu cầu rút hồ sơ",
    DossierStatus.STOPPED: "Dừng xử lý",
    DossierStatus.PROCESSED: "Đã xử lý xong",
    DossierStatus.RESULT_RETURNED: "Đã trả kết quả",
}

S = DossierStatus
# Statuses a dossier may start in when hub first learns of it (filed online = 1; accepted at the counter = 2). A
# dossier already in progress before hub saw it (synced to the portal before hub, or a one-stop system connected
# mid-way) is taken over at any status when its sender says so (DongBoHoSoMC's isUpdating: ADR 0041).
INITIAL: frozenset[DossierStatus] = frozenset({S.NEW, S.ACCEPTED})
TERMINAL: frozenset[DossierStatus] = frozenset({S.REFUSED, S.WITHDRAWN, S.STOPPED, S.RESULT_RETURNED})
# Statuses something may still follow: the dossier is open.
OPEN: frozenset[DossierStatus] = frozenset(s for s in DossierStatus if s not in TERMINAL)
# Statuses whose result is not ready yet: a dossier in one of them past its appointment (NgayHenTra) is overdue.
NOT_READY: frozenset[DossierStatus] = OPEN - {S.PROCESSED}

# from -> the statuses it may move to. A non-terminal status may repeat: a progress update by another officer
# (CapNhatTienDoHoSoMC) or corrected details (DongBoHoSoMC isUpdating) without a status change.
TRANSITIONS: dict[DossierStatus, frozenset[DossierStatus]] = {
    S.NEW: frozenset({S.NEW, S.ACCEPTED, S.REFUSED, S.SUPPLEMENT_REQUESTED, S.WITHDRAWN}),
    S.ACCEPTED: frozenset(
        {S.ACCEPTED, S.PROCESSING, S.SUPPLEMENT_REQUESTED, S.PAYMENT_REQUESTED, S.WITHDRAWN, S.STOPPED}
    ),
    S.PROCESSING: frozenset(
        {S.PROCESSING, S.SUPPLEMENT_REQUESTED, S.PAYMENT_REQUESTED, S.WITHDRAWN, S.STOPPED, S.PROCESSED}
    ),
    S.SUPPLEMENT_REQUESTED: frozenset({S.SUPPLEMENT_REQUESTED, S.ACCEPTED, S.PROCESSING, S.WITHDRAWN, S.STOPPED}),
    S.PAYMENT_REQUESTED: frozenset({S.PAYMENT_REQUESTED, S.PROCESSING, S.PROCESSED, S.WITHDRAWN, S.STOPPED}),
    S.PROCESSED: frozenset({S.PROCESSED, S.RESULT_RETURNED}),
    S.REFUSED: frozenset(),
    S.WITHDRAWN: frozenset(),
    S.STOPPED: frozenset(),
    S.RESULT_RETURNED: frozenset(),
}


def parse_status(value: object) -> DossierStatus:
    try:
        return DossierStatus(int(value))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise InvalidTransition(f"TrangThaiHoSo {value!r} is not a status 1-10", code="invalid_status") from None


def can_transition(current: DossierStatus, new: DossierStatus) -> bool:
    return new in TRANSITIONS[current]


def check_transition(current: DossierStatus | None, new: DossierStatus, *, taken_over: bool = False) -> None:
    """Raise InvalidTransition unless `current -> new` is allowed (`None` = hub has not seen the dossier).
    `taken_over`: a dossier hub has not seen is already in progress (its sender says it was synced before,
    isUpdating): hub's record of it starts at whatever status it is in (ADR 0041)."""
    if current is None:
        if new not in INITIAL and not taken_over:
            raise InvalidTransition(
                f"a new dossier must start in status 1 or 2, not {int(new)}; one already in progress before hub "
                "(synced to the portal before, or filed before its one-stop system was connected to hub) is taken "
                "at its status when sent with isUpdating=true",
                code="invalid_initial_status",
            )
        return
    if not can_transition(current, new):
        raise InvalidTransition(
            f"status {int(current)} ({VIETNAMESE_NAMES[current]}) cannot move to {int(new)} ({VIETNAMESE_NAMES[new]})",
            current=int(current),
            requested=int(new),
        )
