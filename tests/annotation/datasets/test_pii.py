"""The curation step's personal-data finder: what it must find, and what must survive."""

import pytest

from annotation.datasets.curation.pii import PLACEHOLDERS, PiiSpan, find_pii, has_pii, scrub

FOUND = [
    # e-mail
    ("email", "Write to jane.doe+feedback@example.co.uk today.", "jane.doe+feedback@example.co.uk"),
    # phones, international formats
    ("phone", "Call +45 12 34 56 78 now.", "+45 12 34 56 78"),
    ("phone", "Our office: +1 (415) 555-0132.", "+1 (415) 555-0132"),
    ("phone", "London desk +44 20 7946 0958, ask for Sam.", "+44 20 7946 0958"),
    ("phone", "Ring 0045 70 12 34 56 after nine.", "0045 70 12 34 56"),
    ("phone", "Berlin: +49 30 901820", "+49 30 901820"),
    ("phone", "Paris +33 1 42 68 53 00", "+33 1 42 68 53 00"),
    ("phone", "mobile +91 98765 43210", "+91 98765 43210"),
    # phones in national format, after a phone word
    ("phone", "phone: (415) 555-0132", "(415) 555-0132"),
    ("phone", "call 020 7946 0958 tomorrow", "020 7946 0958"),
    # national identity numbers
    ("national_id", "My CPR is 070761-4285.", "070761-4285"),
    ("national_id", "cpr-nr: 0707614285", "0707614285"),
    ("national_id", "SSN 536-90-4399 on file", "536-90-4399"),
    ("national_id", "her ssn is 536904399", "536904399"),
    ("national_id", "NI number AB 12 34 56 C", "AB 12 34 56 C"),
    ("national_id", "personnummer 880320-0016", "880320-0016"),
    ("national_id", "hetu 131052-308T", "131052-308T"),
    ("national_id", "codice fiscale RCCMNL83S18D969H", "RCCMNL83S18D969H"),
    ("national_id", "fødselsnummer 151086 95088", "151086 95088"),
    ("national_id", "mijn BSN is 111222333", "111222333"),
    ("national_id", "DNI 54362315K", "54362315K"),
    ("national_id", "NIR 2 95 10 99 126 111 93", "2 95 10 99 126 111 93"),
    ("national_id", "Steuer-ID 36 574 261 809", "36 574 261 809"),
    ("national_id", "rijksregisternummer 85.07.30-033.28", "85.07.30-033.28"),
    ("national_id", "PESEL 44051401359", "44051401359"),
    # payment cards
    ("card", "Visa 4111 1111 1111 1111 expired", "4111 1111 1111 1111"),
    ("card", "MC 5500-0000-0000-0004.", "5500-0000-0000-0004"),
    ("card", "amex 378282246310005", "378282246310005"),
    ("card", "amex 3782 822463 10005", "3782 822463 10005"),
    # IBANs
    ("iban", "Pay to DE89 3704 0044 0532 0130 00 please", "DE89 3704 0044 0532 0130 00"),
    ("iban", "IBAN: GB82WEST12345698765432.", "GB82WEST12345698765432"),
    ("iban", "DE89 3704 0044 0532 0130 00 AND GB", "DE89 3704 0044 0532 0130 00"),
    # IP addresses
    ("ip", "Server 192.168.10.24 refused.", "192.168.10.24"),
    ("ip", "bind to 127.0.0.1:8000", "127.0.0.1"),
    ("ip", "host 2001:db8::8a2e:370:7334 is down", "2001:db8::8a2e:370:7334"),
    (
        "ip",
        "full 2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
    ),
]


@pytest.mark.parametrize(("kind", "text", "found"), FOUND, ids=[f"{k}:{f}" for k, _, f in FOUND])
def test_finds_each_kind_of_personal_data(kind, text, found):
    start = text.index(found)
    assert find_pii(text) == [PiiSpan(kind=kind, start=start, end=start + len(found), text=found)]


SURVIVES = [
    "It costs $1,299.99 now.",
    "Only 12.50 EUR per unit.",
    "Released on 2024-01-15.",
    "Released on 15/01/2024.",
    "07.06.1961",
    "Born in 1999, graduated in 2025.",
    "Over 1,000,000 people signed.",
    "The table has 123456789 rows.",
    "ISBN 978-3-16-148410-0 is a book.",
    "ISBN 0-306-40615-2",
    "Upgrade to v1.2.3 today.",
    "pip install foo==2.10.1",
    "Python 3.11.7 is out.",
    "v2.10.1.4 fixes it; version 1.2.3.4 broke it.",
    "The counter reached 4111 1111 1111 1112.",  # fails Luhn
    "ref 41234567890123458",  # passes Luhn, but Visa issues no 17-digit numbers
    "ref 9123456789012348",  # passes Luhn, but no issuer's numbers start with 9
    "+1500000 views",
    "diff +1500 -300",
    "DE88 3704 0044 0532 0130 00",
    "It ended at 12:30:45 sharp.",
    "Ticket 0707614285 closed.",
    "count 111222333",
    "QQ 12 34 56 C",
    "SSN 666-90-4399",
    "timestamp 1700000000000 ms",
    "std::vector and dead::beef",
    "call me on 2024-01-15 at 12:30",
    "Write a short poem about the sea.",
]


@pytest.mark.parametrize("text", SURVIVES)
def test_look_alikes_survive(text):
    assert find_pii(text) == []
    assert scrub(text) == (text, [])
    assert not has_pii(text)


def test_scrub_replaces_each_span_with_its_placeholder_in_order():
    text = (
        "Hi, I'm at jane@example.com or +45 12 34 56 78; CPR 070761-4285, "
        "card 4111 1111 1111 1111, IBAN DE89 3704 0044 0532 0130 00, from 10.0.0.7. "
        "Order of 2024-01-15: $1,299.99 for 3 seats."
    )
    assert scrub(text) == (
        "Hi, I'm at <EMAIL> or <PHONE>; CPR <NATIONAL_ID>, "
        "card <CARD>, IBAN <IBAN>, from <IP>. "
        "Order of 2024-01-15: $1,299.99 for 3 seats.",
        ["email", "phone", "national_id", "card", "iban", "ip"],
    )


def test_placeholders_are_typed():
    assert PLACEHOLDERS == {
        "email": "<EMAIL>",
        "phone": "<PHONE>",
        "national_id": "<NATIONAL_ID>",
        "card": "<CARD>",
        "iban": "<IBAN>",
        "ip": "<IP>",
    }


def test_spans_are_sorted_and_do_not_overlap_the_longer_wins():
    # The IBAN holds a 00-prefixed digit run and card-length digit runs; only the IBAN counts.
    text = "ip 10.1.2.3 then GB82 WEST 1234 5698 7654 32 then a@b.io"
    spans = find_pii(text)
    assert [s.kind for s in spans] == ["ip", "iban", "email"]
    assert all(a.end <= b.start for a, b in zip(spans, spans[1:], strict=False))


def test_has_pii_is_true_for_a_row_to_drop():
    assert has_pii("reach me at +44 20 7946 0958")


def test_names_of_people_are_not_detected_no_local_ner_model():
    # Documented limitation (module docstring): names need a NER model, which we lack.
    assert find_pii("Jane Doe from Aarhus wrote this.") == []
