"""pii: e-mails and public IPs replaced, private ones kept, nothing dropped, counts right."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
from support import require_shared_data

from refine.filters.pii import DEFAULT_IP_REPLACEMENT, PiiAnonymizer

IP = DEFAULT_IP_REPLACEMENT


def docs(texts):
    n = len(texts)
    return pa.table(
        {
            "id": [f"d{i}" for i in range(n)],
            "url": [f"http://x/{i}" for i in range(n)],
            "text": pa.array(texts, pa.large_string()),
            "source": [f"f#{i}" for i in range(n)],
        }
    )


def run(texts, **params):
    res = PiiAnonymizer(PiiAnonymizer.Params(**params)).process(docs(texts))
    s = res.stats
    assert s.docs_in == s.docs_out == len(texts) and not s.dropped
    s.check_balance()
    assert res.log["kept"].to_pylist() == [True] * len(texts)
    return res


def test_emails_and_public_ips_are_replaced_and_counted():
    texts = [
        "Write to john.doe+news@gmail.com or Jane_D@mail.example.co.uk today.",
        "Our DNS is 8.8.8.8, our v6 is 2001:4860:4860::8888.",
        "Nothing to see here.",
        "",
    ]
    res = run(texts)
    assert res.table["text"].to_pylist() == [
        "Write to email@example.com or email@example.com today.",
        f"Our DNS is {IP}, our v6 is {IP}.",
        "Nothing to see here.",
        "",
    ]
    assert res.table["pii_emails"].to_pylist() == [2, 0, 0, 0]
    assert res.table["pii_ips"].to_pylist() == [0, 2, 0, 0]
    assert res.log["pii_ips"].to_pylist() == [0, 2, 0, 0]
    c = res.stats.counters
    assert (c["emails_replaced"], c["ips_replaced"], c["docs_with_pii"]) == (2, 2, 2)
    new_bytes = sum(len(t.encode()) for t in res.table["text"].to_pylist())
    assert res.stats.bytes_out == new_bytes != res.stats.bytes_in
    assert res.table.schema.field("text").type == pa.large_string()


def test_private_reserved_and_non_addresses_are_kept():
    texts = [
        "LAN 10.0.0.1, 192.168.1.1, 172.16.5.4, loopback 127.0.0.1 and ::1, link fe80::1",
        "version 1.2.3.4.5 and 11.22.33.444 and v2.10.3.1b",  # not standalone addresses
        "at 12:30:45, MAC 00:1a:2b:3c:4d:5e, C++ std::vector, Home :: Products, in)::a,b",
        "收录于版本8.0.1.27165",
        "documentation range 192.0.2.1 and 2001:db8::1",  # reserved for examples: not global
    ]
    res = run(texts)
    assert res.table["text"].to_pylist() == texts
    assert res.table["pii_ips"].to_pylist() == [0] * len(texts)


def test_emails_inside_urls_keep_the_url_around_them():
    texts = [
        "see https://x.example/contact?to=jo@doe.org&x=1 now",
        "mailto:info@firma.de",
        "profile https://medium.com/@user.name stays",
        "scp user@1.2.3",  # no dotted domain with a letter TLD: not an e-mail
    ]
    res = run(texts)
    assert res.table["text"].to_pylist() == [
        "see https://x.example/contact?to=email@example.com&x=1 now",
        "mailto:email@example.com",
        "profile https://medium.com/@user.name stays",
        "scp user@1.2.3",
    ]


def test_replacements_and_switches_are_config():
    text = ["a@b.com 8.8.4.4 10.1.1.1"]
    res = run(text, email_replacement="<EMAIL>", ip_replacement="<IP>", only_public_ips=False)
    assert res.table["text"].to_pylist() == ["<EMAIL> <IP> <IP>"]
    assert run(text, emails=False, ips=False).table["text"].to_pylist() == text
    assert run(text, email_replacement=r"\1").table["text"].to_pylist() == [rf"\1 {IP} 10.1.1.1"]


def test_never_raises_on_odd_text():
    line = ("word " * 2_000_000) + "mail me at a@b.org from 8.8.8.8"  # a 10 MB single line
    texts = [
        line,
        "",
        "中文没有空格联系我们admin@example.cn谢谢",
        "اتصل بنا info@site.sa شكرا",
        None,
    ]
    res = run(texts)
    out = res.table["text"].to_pylist()
    assert out[0].endswith(f"email@example.com from {IP}")
    assert out[1] == "" and out[4] is None
    assert "email@example.com" in out[3]
    assert run([]).table.num_rows == 0


def test_real_crawl_text_is_anonymised_without_losing_documents():
    data = require_shared_data()
    with gzip.open(data / "text" / "cc-main-2019-30-en.jsonl.gz", "rt") as f:
        texts = [json.loads(line)["text"] for line in f]
    res = run(texts)
    assert res.stats.counters["emails_replaced"] > 0
    for before, after in zip(texts, res.table["text"].to_pylist(), strict=True):
        if "@" not in before and ":" not in before and "." not in before:
            assert before == after


def test_ips_in_text_without_spaces():
    res = run(["服务器地址8.8.8.8谢谢", "الخادم 8.8.4.4 شكرا"])
    assert res.table["text"].to_pylist() == [f"服务器地址{IP}谢谢", f"الخادم {IP} شكرا"]
