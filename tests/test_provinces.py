"""The provinces before and after 1 July 2025 (Resolution 202/2025/QH15): the tables, the mapping from either
numbering to the province that holds the territory now, and how an address of the population database is read."""

from __future__ import annotations

import pytest

from hub.domain import provinces
from hub.domain.errors import InvalidIdentifier
from hub.domain.identifiers import personal_id


def test_sixty_three_provinces_became_thirty_four() -> None:
    assert len(provinces.OLD) == 63 and len(provinces.NOW) == 34
    # the current codes are those REFERENCE.md lists
    listed = "01 04 08 11 12 14 15 19 20 22 24 25 31 33 37 38 40 42 44 46 48 51 52 56 66 68 75 79 80 82 86 91 92 96"
    assert sorted(provinces.NOW) == listed.split(" ")
    assert {p.name for p in provinces.NOW.values() if p.city} == {
        "Hà Nội", "Huế", "Hải Phòng", "Đà Nẵng", "Hồ Chí Minh", "Cần Thơ"
    }  # fmt: skip
    # every old province went into exactly one current one, and every current code is an old code kept
    assert set(provinces.MERGED_INTO) == set(provinces.OLD)
    assert set(provinces.MERGED_INTO.values()) == set(provinces.NOW)
    assert all(provinces.MERGED_INTO[code] == code for code in provinces.NOW)


@pytest.mark.parametrize(
    ("code", "now", "then"),
    [
        ("49", "Đà Nẵng", "Quảng Nam"),
        ("049", "Đà Nẵng", "Quảng Nam"),  # as a personal ID writes it
        (74, "Hồ Chí Minh", "Bình Dương"),
        ("77", "Hồ Chí Minh", "Bà Rịa - Vũng Tàu"),
        ("24", "Bắc Ninh", "Bắc Giang"),  # the merged province kept Bắc Giang's seat, hence its code
        ("27", "Bắc Ninh", "Bắc Ninh"),
        ("36", "Ninh Bình", "Nam Định"),
        ("02", "Tuyên Quang", "Hà Giang"),
        ("15", "Lào Cai", "Yên Bái"),
        ("10", "Lào Cai", "Lào Cai"),
        ("83", "Vĩnh Long", "Bến Tre"),
        ("95", "Cà Mau", "Bạc Liêu"),
        ("12", "Lai Châu", "Lai Châu"),  # not merged
    ],
)
def test_a_code_in_either_numbering_maps_to_the_province_now(code: object, now: str, then: str) -> None:
    assert (found := provinces.now_of(code)) is not None and found.name == now
    assert (old := provinces.old_of(code)) is not None and old.name == then


@pytest.mark.parametrize("code", ["", "0", "00", "03", "100", "0049", "abc", "٤٩", None, True, 4.9, "4 9"])
def test_codes_neither_numbering_has_map_to_nothing(code: object) -> None:
    assert provinces.now_of(code) is None


def test_a_personal_id_keeps_the_old_numbering_for_life() -> None:
    # born in Quảng Nam (049) before the merger: still a valid ID; the province of birth is now part of Đà Nẵng
    pid = personal_id("049090123456")
    assert pid.province_code == 49 and provinces.now_of(pid.province_code) == provinces.NOW["48"]
    with pytest.raises(InvalidIdentifier):
        personal_id("003090123456")  # 03 was never a province code


def test_an_address_with_a_district_or_an_old_only_code_was_written_before_the_reorganisation() -> None:
    old = provinces.address_units({"MaTinhThanh": "49", "MaQuanHuyen": "502", "ChiTiet": "…, Tỉnh Quảng Nam"})
    assert old is not None and old.recorded_before and old.province.code == "48"
    assert old.province_recorded is not None and old.province_recorded.name == "Quảng Nam"
    # a code both numberings have, with a district: written before; it named Bắc Giang then
    then = provinces.address_units({"MaTinhThanh": "24", "MaQuanHuyen": "213"})
    assert then is not None and then.recorded_before and then.province.name == "Bắc Ninh"
    assert then.province_recorded is not None and then.province_recorded.name == "Bắc Giang"
    # an old-only code without a district is still the old numbering
    bare = provinces.address_units({"MaTinhThanh": "94", "MaQuanHuyen": ""})
    assert bare is not None and bare.recorded_before and bare.province.name == "Cần Thơ"
    # the same province before and after, with a district: written before, no other province to name
    same = provinces.address_units({"MaTinhThanh": "01", "MaQuanHuyen": "001"})
    assert same is not None and same.recorded_before and same.province_recorded is None
    # no district, a current code: the current units
    now = provinces.address_units({"MaTinhThanh": "24", "MaQuanHuyen": None, "MaPhuongXa": "07210"})
    assert now is not None and not now.recorded_before and now.province_recorded is None
    assert now.province.name == "Bắc Ninh"
    for unknown in (None, "x", {}, {"MaTinhThanh": ""}, {"MaTinhThanh": "03"}, {"MaTinhThanh": ["48"]}):
        assert provinces.address_units(unknown) is None
