"""The validation report, in the vocabulary of ETSI EN 319 102-1."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

TOTAL_PASSED, TOTAL_FAILED, INDETERMINATE = "TOTAL-PASSED", "TOTAL-FAILED", "INDETERMINATE"

# sub-indication -> the main indication it belongs to (ETSI EN 319 102-1, clause 5.1.3)
SUB_INDICATIONS: dict[str, str] = {
    "FORMAT_FAILURE": TOTAL_FAILED,
    "HASH_FAILURE": TOTAL_FAILED,
    "SIG_CRYPTO_FAILURE": TOTAL_FAILED,
    "REVOKED": TOTAL_FAILED,
    "EXPIRED": TOTAL_FAILED,
    "NOT_YET_VALID": TOTAL_FAILED,
    "SIG_CONSTRAINTS_FAILURE": INDETERMINATE,
    "CHAIN_CONSTRAINTS_FAILURE": INDETERMINATE,
    "CRYPTO_CONSTRAINTS_FAILURE": INDETERMINATE,
    "NO_CERTIFICATE_CHAIN_FOUND": INDETERMINATE,
    "NO_SIGNING_CERTIFICATE_FOUND": INDETERMINATE,
    "TRY_LATER": INDETERMINATE,
    "REVOCATION_OUT_OF_BOUNDS_NO_POE": INDETERMINATE,
}
EXIT_CODES = {TOTAL_PASSED: 0, TOTAL_FAILED: 1, INDETERMINATE: 3}


@dataclass
class Report:
    indication: str
    sub_indication: str | None = None
    detail: str | None = None
    signature_format: str | None = None  # XMLDSig | XAdES-B-B | XAdES-B-T | XAdES-B-LT
    signer: dict[str, Any] | None = None
    chain: list[dict[str, Any]] = field(default_factory=list)
    signing_time: str | None = None  # claimed (xades:SigningTime)
    validation_time: str | None = None
    timestamp: dict[str, Any] | None = None
    revocation: list[dict[str, Any]] = field(default_factory=list)
    algorithms: dict[str, Any] = field(default_factory=dict)
    signed_references: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def failed(cls, sub: str, detail: str, **extra: Any) -> Report:
        return cls(indication=SUB_INDICATIONS[sub], sub_indication=sub, detail=detail, **extra)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.indication]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def as_text(self) -> str:
        lines = [f"{self.indication}" + (f" / {self.sub_indication}" if self.sub_indication else "")]
        if self.detail:
            lines.append(f"  detail:          {self.detail}")
        if self.signature_format:
            lines.append(f"  format:          {self.signature_format}")
        if self.signer:
            lines.append(f"  signer:          {self.signer.get('subject')}")
            lines.append(f"  serial:          {self.signer.get('serial')}")
        for i, c in enumerate(self.chain):
            lines.append(f"  chain[{i}]:        {c.get('subject')}")
        if self.signing_time:
            lines.append(f"  signing time:    {self.signing_time} (claimed)")
        if self.timestamp and self.timestamp.get("time"):
            tsa = (self.timestamp.get("tsa") or {}).get("subject")
            lines.append(
                f"  time-stamp:      {self.timestamp['time']} by {tsa} ({self.timestamp.get('status', 'failed')})"
            )
        if self.validation_time:
            lines.append(f"  validated at:    {self.validation_time}")
        for r in self.revocation:
            lines.append(f"  revocation:      {r.get('source')} {r.get('status')} for {r.get('certificate')}")
        for ref in self.signed_references:
            lines.append(f"  signed:          URI={ref.get('uri')!r} ({ref.get('bytes')} bytes)")
        return "\n".join(lines)
