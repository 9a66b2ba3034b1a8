"""Provinces before and after the reorganisation of 1 July 2025 (Resolution 202/2025/QH15): 63 provincial units
became 34, and the district level was abolished.

Old codes stay in stored data: in every personal ID (its first three digits are the province of birth registration,
old numbering) and in the population database's addresses recorded before the change (`MaTinhThanh` with a
`MaQuanHuyen`). Every current code is also an old code — the province whose seat the merged province kept — so a
code maps to the province that holds its territory now whichever numbering it was written in; what an old code
*named* is the old table's business (`OLD["24"]` is Bắc Giang, `NOW["24"]` Bắc Ninh, into which Bắc Giang merged).

One place in the code for these facts (REFERENCE.md, Identifiers), so a deployment can see and adjust them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

EFFECTIVE = date(2025, 7, 1)  # Resolution 202/2025/QH15 took effect


@dataclass(frozen=True, slots=True)
class Province:
    code: str  # two digits
    name: str  # as it is written after "Tỉnh" / "Thành phố"
    city: bool  # a centrally governed city (thành phố trực thuộc trung ương)

    @property
    def title(self) -> str:
        return f"{'Thành phố' if self.city else 'Tỉnh'} {self.name}"


def _table(rows: str) -> dict[str, Province]:
    table: dict[str, Province] = {}
    for row in rows.strip().splitlines():
        code, kind, name = (part.strip() for part in row.split("|"))
        table[code] = Province(code, name, kind == "TP")
    return table


# The 34 provincial units since 1 July 2025.
NOW: Mapping[str, Province] = _table("""
01 | TP | Hà Nội
04 | T  | Cao Bằng
08 | T  | Tuyên Quang
11 | T  | Điện Biên
12 | T  | Lai Châu
14 | T  | Sơn La
15 | T  | Lào Cai
19 | T  | Thái Nguyên
20 | T  | Lạng Sơn
22 | T  | Quảng Ninh
24 | T  | Bắc Ninh
25 | T  | Phú Thọ
31 | TP | Hải Phòng
33 | T  | Hưng Yên
37 | T  | Ninh Bình
38 | T  | Thanh Hóa
40 | T  | Nghệ An
42 | T  | Hà Tĩnh
44 | T  | Quảng Trị
46 | TP | Huế
48 | TP | Đà Nẵng
51 | T  | Quảng Ngãi
52 | T  | Gia Lai
56 | T  | Khánh Hòa
66 | T  | Đắk Lắk
68 | T  | Lâm Đồng
75 | T  | Đồng Nai
79 | TP | Hồ Chí Minh
80 | T  | Tây Ninh
82 | T  | Đồng Tháp
86 | T  | Vĩnh Long
91 | T  | An Giang
92 | TP | Cần Thơ
96 | T  | Cà Mau
""")

# The 63 provincial units before 1 July 2025 (Huế: a city since 1 January 2025, before that Thừa Thiên Huế).
OLD: Mapping[str, Province] = _table("""
01 | TP | Hà Nội
02 | T  | Hà Giang
04 | T  | Cao Bằng
06 | T  | Bắc Kạn
08 | T  | Tuyên Quang
10 | T  | Lào Cai
11 | T  | Điện Biên
12 | T  | Lai Châu
14 | T  | Sơn La
15 | T  | Yên Bái
17 | T  | Hòa Bình
19 | T  | Thái Nguyên
20 | T  | Lạng Sơn
22 | T  | Quảng Ninh
24 | T  | Bắc Giang
25 | T  | Phú Thọ
26 | T  | Vĩnh Phúc
27 | T  | Bắc Ninh
30 | T  | Hải Dương
31 | TP | Hải Phòng
33 | T  | Hưng Yên
34 | T  | Thái Bình
35 | T  | Hà Nam
36 | T  | Nam Định
37 | T  | Ninh Bình
38 | T  | Thanh Hóa
40 | T  | Nghệ An
42 | T  | Hà Tĩnh
44 | T  | Quảng Bình
45 | T  | Quảng Trị
46 | TP | Huế
48 | TP | Đà Nẵng
49 | T  | Quảng Nam
51 | T  | Quảng Ngãi
52 | T  | Bình Định
54 | T  | Phú Yên
56 | T  | Khánh Hòa
58 | T  | Ninh Thuận
60 | T  | Bình Thuận
62 | T  | Kon Tum
64 | T  | Gia Lai
66 | T  | Đắk Lắk
67 | T  | Đắk Nông
68 | T  | Lâm Đồng
70 | T  | Bình Phước
72 | T  | Tây Ninh
74 | T  | Bình Dương
75 | T  | Đồng Nai
77 | T  | Bà Rịa - Vũng Tàu
79 | TP | Hồ Chí Minh
80 | T  | Long An
82 | T  | Tiền Giang
83 | T  | Bến Tre
84 | T  | Trà Vinh
86 | T  | Vĩnh Long
87 | T  | Đồng Tháp
89 | T  | An Giang
91 | T  | Kiên Giang
92 | TP | Cần Thơ
93 | T  | Hậu Giang
94 | T  | Sóc Trăng
95 | T  | Bạc Liêu
96 | T  | Cà Mau
""")

# Each current province and the old ones merged into it, first the one whose name it kept. Its code is that of the
# province whose seat it kept: the same one, but for Lào Cai 15 (Yên Bái's seat), Bắc Ninh 24 (Bắc Giang's), Quảng
# Trị 44 (Quảng Bình's), Gia Lai 52 (Bình Định's), Tây Ninh 80 (Long An's), Đồng Tháp 82 (Tiền Giang's) and An
# Giang 91 (Kiên Giang's).
_MERGED: dict[str, tuple[str, ...]] = {
    "08": ("08", "02"),
    "15": ("10", "15"),
    "19": ("19", "06"),
    "24": ("27", "24"),
    "25": ("25", "26", "17"),
    "31": ("31", "30"),
    "33": ("33", "34"),
    "37": ("37", "35", "36"),
    "44": ("45", "44"),
    "48": ("48", "49"),
    "51": ("51", "62"),
    "52": ("64", "52"),
    "56": ("56", "58"),
    "66": ("66", "54"),
    "68": ("68", "67", "60"),
    "75": ("75", "70"),
    "79": ("79", "74", "77"),
    "80": ("72", "80"),
    "82": ("87", "82"),
    "86": ("86", "83", "84"),
    "91": ("89", "91"),
    "92": ("92", "94", "93"),
    "96": ("96", "95"),
}
MERGED_INTO: Mapping[str, str] = {old: new for new, olds in _MERGED.items() for old in olds} | {
    code: code for code in NOW if code not in _MERGED
}


def _two_digits(code: object) -> str | None:
    text = str(code).strip() if isinstance(code, str | int) and not isinstance(code, bool) else ""
    if not text.isascii() or not text.isdigit() or not 1 <= len(text) <= 3:
        return None
    value = int(text)
    return f"{value:02d}" if 0 < value < 100 else None


def now_of(code: object) -> Province | None:
    """The province that holds a code's territory since 1 July 2025, the code in either numbering ("49", "049" of a
    personal ID, 49); None for a code neither numbering has."""
    two = _two_digits(code)
    new = MERGED_INTO.get(two) if two is not None else None
    return NOW[new] if new is not None else None


def old_of(code: object) -> Province | None:
    """What a code named before 1 July 2025."""
    two = _two_digits(code)
    return OLD.get(two) if two is not None else None


@dataclass(frozen=True, slots=True)
class AddressUnits:
    """Where an address of the population database lies now, and whether the register wrote it in the units
    before the reorganisation (then its district and ward names are the old ones, for the citizen to check)."""

    province: Province
    recorded_before: bool
    province_recorded: Province | None  # the old province the address names, when it is not the current one


def address_units(address: Any) -> AddressUnits | None:
    """Read an address of the register (`MaTinhThanh`, `MaQuanHuyen`, …). It was written before 1 July 2025 when it
    has a district (there are none since) or a province code only the old numbering has; an address with neither
    is taken as written in the current units."""
    if not isinstance(address, dict):
        return None
    code = _two_digits(address.get("MaTinhThanh"))
    now = now_of(code)
    if code is None or now is None:
        return None
    district = address.get("MaQuanHuyen")
    before = code not in NOW or (isinstance(district, str) and district.strip() != "")
    then = OLD[code] if before else None
    return AddressUnits(now, before, then if then is not None and then.name != now.name else None)
