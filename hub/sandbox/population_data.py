"""A generated, reproducible population for the population-database sandbox: Vietnamese names with diacritics,
personal IDs whose structure matches birth province, century, sex and year, addresses with the 2025 province
codes (birth registrations keep the old ones, and about three residences in ten are still written in the units
before 1 July 2025), and family links (Cha father, Me mother, VoChong spouse).

Self-contained on purpose: a sandbox knows the contract, never hub's internals."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

# (old 3-digit CCCD province code, old name, new 2-digit province code since 1 July 2025, new name, weight)
PROVINCES: list[tuple[str, str, str, str, int]] = [
    ("001", "Hà Nội", "01", "Hà Nội", 14),
    ("079", "TP. Hồ Chí Minh", "79", "TP. Hồ Chí Minh", 14),
    ("074", "Bình Dương", "79", "TP. Hồ Chí Minh", 4),
    ("077", "Bà Rịa - Vũng Tàu", "79", "TP. Hồ Chí Minh", 3),
    ("031", "Hải Phòng", "31", "Hải Phòng", 4),
    ("030", "Hải Dương", "31", "Hải Phòng", 3),
    ("048", "Đà Nẵng", "48", "Đà Nẵng", 3),
    ("049", "Quảng Nam", "48", "Đà Nẵng", 3),
    ("092", "Cần Thơ", "92", "Cần Thơ", 3),
    ("094", "Sóc Trăng", "92", "Cần Thơ", 2),
    ("046", "Thừa Thiên Huế", "46", "Huế", 2),
    ("038", "Thanh Hóa", "38", "Thanh Hóa", 4),
    ("040", "Nghệ An", "40", "Nghệ An", 4),
    ("042", "Hà Tĩnh", "42", "Hà Tĩnh", 2),
    ("036", "Nam Định", "37", "Ninh Bình", 3),
    ("034", "Thái Bình", "33", "Hưng Yên", 3),
    ("027", "Bắc Ninh", "24", "Bắc Ninh", 2),
    ("025", "Phú Thọ", "25", "Phú Thọ", 2),
    ("066", "Đắk Lắk", "66", "Đắk Lắk", 2),
    ("089", "An Giang", "91", "An Giang", 2),
    ("087", "Đồng Tháp", "82", "Đồng Tháp", 2),
    ("083", "Bến Tre", "86", "Vĩnh Long", 2),
    ("096", "Cà Mau", "96", "Cà Mau", 1),
]
WARDS: dict[str, list[tuple[str, str]]] = {
    "01": [("00004", "Phường Ba Đình"), ("00070", "Phường Hoàn Kiếm"), ("00160", "Phường Cầu Giấy")],
    "79": [("26734", "Phường Sài Gòn"), ("26740", "Phường Bến Thành"), ("27004", "Phường Thủ Đức")],
    "31": [("11311", "Phường Hồng Bàng"), ("11329", "Phường Lê Chân")],
    "48": [("20194", "Phường Hải Châu"), ("20242", "Phường Thanh Khê")],
    "92": [("31117", "Phường Ninh Kiều"), ("31135", "Phường Cái Khế")],
}
# a district per old province, for the addresses recorded before 1 July 2025 (old 3-digit code -> district)
DISTRICTS: dict[str, tuple[str, str]] = {
    "001": ("001", "Quận Ba Đình"),
    "079": ("760", "Quận 1"),
    "074": ("718", "Thành phố Thủ Dầu Một"),
    "077": ("747", "Thành phố Vũng Tàu"),
    "031": ("303", "Quận Hồng Bàng"),
    "030": ("288", "Thành phố Hải Dương"),
    "048": ("492", "Quận Hải Châu"),
    "049": ("502", "Thành phố Tam Kỳ"),
    "092": ("916", "Quận Ninh Kiều"),
    "094": ("941", "Thành phố Sóc Trăng"),
    "036": ("356", "Thành phố Nam Định"),
    "034": ("336", "Thành phố Thái Bình"),
    "027": ("256", "Thành phố Bắc Ninh"),
    "089": ("883", "Thành phố Long Xuyên"),
    "087": ("866", "Thành phố Cao Lãnh"),
    "083": ("829", "Thành phố Bến Tre"),
}
DEFAULT_WARDS = [("00001", "Phường Trung tâm"), ("00002", "Xã Đông"), ("00003", "Xã Tây")]
STREETS = ["Lê Lợi", "Trần Hưng Đạo", "Nguyễn Huệ", "Hai Bà Trưng", "Lý Thường Kiệt", "Phan Chu Trinh",
           "Nguyễn Trãi", "Điện Biên Phủ", "Võ Thị Sáu", "Hùng Vương"]  # fmt: skip
FAMILY = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi", "Đỗ", "Hồ",
          "Ngô", "Dương", "Lý"]  # fmt: skip
FAMILY_WEIGHTS = [38, 11, 9, 7, 5, 4, 4, 4, 3, 2, 2, 2, 2, 2, 1, 1]
MIDDLE_MALE = ["Văn", "Hữu", "Đức", "Minh", "Quốc", "Thanh", "Công", "Xuân", "Gia", "Đình"]
MIDDLE_FEMALE = ["Thị", "Ngọc", "Thu", "Thanh", "Hồng", "Mỹ", "Kim", "Bảo", "Phương", "Diệu"]
GIVEN_MALE = ["Anh", "Bình", "Cường", "Dũng", "Đạt", "Hải", "Hiếu", "Hùng", "Khánh", "Long", "Minh", "Nam",
              "Phúc", "Quân", "Sơn", "Thắng", "Toàn", "Trung", "Tuấn", "Việt"]  # fmt: skip
GIVEN_FEMALE = ["An", "Chi", "Dung", "Giang", "Hà", "Hạnh", "Hoa", "Hương", "Lan", "Linh", "Mai", "Ngân",
                "Nhung", "Oanh", "Phương", "Quỳnh", "Thảo", "Trang", "Uyên", "Yến"]  # fmt: skip
ETHNIC = [("Kinh", 85), ("Tày", 2), ("Thái", 2), ("Mường", 2), ("Khmer", 2), ("Hoa", 2), ("Nùng", 1)]
RELIGION = [("Không", 80), ("Phật giáo", 10), ("Công giáo", 8), ("Cao Đài", 2)]
BLOOD = ["O", "A", "B", "AB"]
SINGLE, MARRIED, DIVORCED, WIDOWED = "1", "2", "3", "4"
TODAY = date(2026, 1, 1)  # the population's reference day: stable across runs


@dataclass
class Person:
    id: str
    family: str
    middle: str
    given: str
    male: bool
    born: date
    birth_province: tuple[str, str, str, str, int]
    home_province: tuple[str, str, str, str, int]
    ward: tuple[str, str]
    street: str
    ethnic: str
    religion: str
    blood: str | None
    marital: str = SINGLE
    father: Person | None = None
    mother: Person | None = None
    spouse: Person | None = None
    head: Person | None = None
    old_id_card: str | None = None
    household_book: str | None = None

    @property
    def full_name(self) -> str:
        return f"{self.family} {self.middle} {self.given}"


class Population:
    """`size` people in households; `records[id]` is the CongDan record (dicts in the XSD's element order)."""

    def __init__(self, size: int = 3000, seed: int = 20250701) -> None:
        self.rng = random.Random(seed)
        self._ids: set[str] = set()
        self.people: list[Person] = []
        while len(self.people) < size:
            self._household()
        self.people = self.people[:size]
        kept = {p.id for p in self.people}
        self.records: dict[str, dict[str, Any]] = {p.id: self._record(p, kept) for p in self.people}

    # -- generation ------------------------------------------------------------------------------------------

    def _province(self) -> tuple[str, str, str, str, int]:
        return self.rng.choices(PROVINCES, weights=[p[4] for p in PROVINCES])[0]

    def _new_id(self, province: str, male: bool, year: int) -> str:
        century_sex = 2 * ((year - 1900) // 100) + (0 if male else 1)
        while True:
            value = f"{province}{century_sex}{year % 100:02d}{self.rng.randrange(1_000_000):06d}"
            if value not in self._ids:
                self._ids.add(value)
                return value

    def _person(self, male: bool, born: date, family: str | None = None, home: Any = None) -> Person:
        birth_province = self._province()
        home_province = home or (birth_province if self.rng.random() < 0.7 else self._province())
        wards = WARDS.get(home_province[2], DEFAULT_WARDS)
        p = Person(
            id=self._new_id(birth_province[0], male, born.year),
            family=family or self.rng.choices(FAMILY, weights=FAMILY_WEIGHTS)[0],
            middle=self.rng.choice(MIDDLE_MALE if male else MIDDLE_FEMALE),
            given=self.rng.choice(GIVEN_MALE if male else GIVEN_FEMALE),
            male=male,
            born=born,
            birth_province=birth_province,
            home_province=home_province,
            ward=self.rng.choice(wards),
            street=f"{self.rng.randrange(1, 400)} {self.rng.choice(STREETS)}",
            ethnic=self.rng.choices([e for e, _ in ETHNIC], weights=[w for _, w in ETHNIC])[0],
            religion=self.rng.choices([r for r, _ in RELIGION], weights=[w for _, w in RELIGION])[0],
            blood=self.rng.choice(BLOOD) if self.rng.random() < 0.8 else None,
        )
        if born.year < 1995 and self.rng.random() < 0.6:
            p.old_id_card = f"{self.rng.randrange(10**8, 10**9)}"
        self.people.append(p)
        return p

    def _birthday(self, start_year: int, end_year: int) -> date:
        first, last = date(start_year, 1, 1), min(date(end_year, 12, 31), TODAY - timedelta(days=1))
        return first + timedelta(days=self.rng.randrange((last - first).days + 1))

    def _household(self) -> None:
        r = self.rng.random()
        husband_born = self._birthday(1950, 2002)
        if r < 0.15:  # a single adult
            person = self._person(self.rng.random() < 0.5, husband_born)
            person.head = person
            return
        husband = self._person(True, husband_born)
        wife = self._person(False, self._birthday(husband_born.year - 2, min(husband_born.year + 6, 2004)),
                            home=husband.home_province)  # fmt: skip
        wife.ward, wife.street = husband.ward, husband.street
        husband.head = wife.head = husband
        book = f"{self.rng.randrange(10**8, 10**9)}" if husband_born.year < 1990 else None
        husband.household_book = wife.household_book = book
        if r < 0.85:
            husband.marital = wife.marital = MARRIED
            husband.spouse, wife.spouse = wife, husband
        elif r < 0.95:
            husband.marital = wife.marital = DIVORCED
        else:
            husband.marital, wife.marital = WIDOWED, WIDOWED  # one of them died; both records kept for links
        earliest = wife.born.year + 20
        for _ in range(self.rng.choice([0, 1, 1, 2, 2, 2, 3])):
            if earliest > TODAY.year - 1:
                break
            child = self._person(self.rng.random() < 0.51, self._birthday(earliest, min(wife.born.year + 42, 2025)),
                                 family=husband.family, home=husband.home_province)  # fmt: skip
            child.ward, child.street = husband.ward, husband.street
            child.father, child.mother, child.head = husband, wife, husband
            child.household_book = book

    # -- records ---------------------------------------------------------------------------------------------

    @staticmethod
    def _address(province_code: str, ward: tuple[str, str], detail: str, province_name: str) -> dict[str, Any]:
        return {
            "MaTinhThanh": province_code,
            "MaQuanHuyen": "",
            "MaPhuongXa": ward[0],
            "ChiTiet": f"{detail}, {ward[1]}, {province_name}" if detail else f"{ward[1]}, {province_name}",
            "QuocGia": "VN",
        }

    def _residence(self, p: Person) -> dict[str, Any]:
        """Where a person lives. About three records in ten were written before 1 July 2025 and not updated since:
        the old province's code and name, and a district (there are none since) — chosen by the ID's last digit, so
        that the rest of the population is generated as before."""
        home = p.home_province
        if p.id[-1] not in "012":
            return self._address(home[2], p.ward, p.street, home[3])
        district = DISTRICTS.get(home[0], ("999", "Huyện Trung tâm"))
        return self._address(home[0][1:], p.ward, p.street, f"{district[1]}, {home[1]}") | {"MaQuanHuyen": district[0]}

    def _record(self, p: Person, kept: set[str]) -> dict[str, Any]:
        def relative(r: Person | None) -> dict[str, Any] | None:
            if r is None or r.id not in kept:
                return None
            return {"HoVaTen": r.full_name, "SoDinhDanh": r.id, "QuocTich": "VN"}

        birth = p.birth_province
        head = p.head if p.head is not None and p.head.id in kept else None
        relation = "Chủ hộ" if head is p else "Vợ" if head is not None and head.spouse is p else "Con"
        record: dict[str, Any] = {
            "SoDinhDanh": p.id,
            "SoCMND": p.old_id_card,
            "HoVaTen": {"Ho": p.family, "ChuDem": p.middle, "Ten": p.given},
            "GioiTinh": "1" if p.male else "2",
            "DanToc": p.ethnic,
            "TonGiao": p.religion,
            "TinhTrangHonNhan": p.marital,
            "NhomMau": p.blood,
            "NgayThangNamSinh": {"NgayThangNam": p.born.strftime("%Y%m%d"), "Nam": p.born.strftime("%Y")},
            # registered at birth in the old province (old codes remain in stored data)
            "NoiDangKyKhaiSinh": {
                "MaTinhThanh": birth[0][1:],
                "MaQuanHuyen": "",
                "MaPhuongXa": "",
                "ChiTiet": birth[1],
                "QuocGia": "VN",
            },
            "QueQuan": self._address(birth[2], ("", "Quê quán"), "", birth[3]) | {"MaPhuongXa": ""},
            "ThuongTru": self._residence(p),
            "NoiOHienTai": self._residence(p),
            "QuocTich": "VN",
            "Cha": relative(p.father),
            "Me": relative(p.mother),
            "VoChong": relative(p.spouse),
            "NguoiDaiDien": relative(p.father or p.mother) if (TODAY - p.born).days < 18 * 365 else None,
            "ChuHo": {"QuanHe": relation, "HoVaTen": head.full_name, "SoDinhDanh": head.id} if head else None,
            "SoSoHoKhau": p.household_book,
        }
        record["QueQuan"]["ChiTiet"] = birth[3]
        return record

    # -- queries for tests and the demo ----------------------------------------------------------------------

    def find(self, **conditions: Any) -> list[dict[str, Any]]:
        """Records whose top-level fields equal the given values, plus has_<Relative>=True/False filters."""
        found = []
        for rec in self.records.values():
            ok = True
            for key, want in conditions.items():
                if key.startswith("has_"):
                    ok = ok and (rec.get(key[4:]) is not None) == bool(want)
                else:
                    ok = ok and rec.get(key) == want
            if ok:
                found.append(rec)
        return found
