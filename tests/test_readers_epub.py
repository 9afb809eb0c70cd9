"""EPUB reading: spine order, chapters from the table of contents, front
matter and Gutenberg boilerplate out, and bad archives refused in bounded
memory."""

import re
import subprocess
import sys
import zipfile

import pytest
from conftest import BOOKS, DATA, SHARED_DATA
from extraction_recall import recall, words
from peak_rss import PEAK_KIB_SOURCE

from pipelines.documents import DocumentError, load_document

FIXTURES = DATA / "documents"
STORY = (BOOKS / "doyle_scandal_in_bohemia.txt").read_text(encoding="utf-8")
SHARED_EPUB = SHARED_DATA / "epub" / "pg1342.epub"


@pytest.mark.parametrize("name", ["scandal_epub3.epub", "scandal_epub2.epub"])
def test_story_epub_reads_like_the_plain_text(name):
    document = load_document(FIXTURES / name)
    assert document.format == "epub" and document.kind == "book" and document.title == "A Scandal in Bohemia"
    assert document.extractor == "zipfile+lxml" and document.extractor_version.startswith("lxml ")
    assert recall(words(STORY), words(document.text)) >= 0.99
    # nothing but the story: no cover, contents list, Gutenberg header, credit or licence
    assert recall(words(document.text), words(STORY)) >= 0.995
    for boilerplate in ("Project Gutenberg", "START OF", "END OF", "LICENSE", "Cover illustration", "CONTENTS",
                        "Produced by", "About Project"):
        assert boilerplate not in document.text, boilerplate
    assert document.metadata["gutenberg"]["ebook"] == 1661
    assert [s.title for s in document.sections] == ["I.", "II.", "III."]
    for section in document.sections:
        assert document.text[section.start:].startswith(section.title + "\n\n")
    assert document.text[document.sections[0].start:].startswith("I.\n\nTo Sherlock Holmes she is always THE woman.")
    assert document.text.rstrip().endswith("when he refers to her photograph, it is always under the honourable title of the woman.")


def _epub(path, files, mimetype=True):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        if mimetype:
            archive.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        for name, data in files.items():
            archive.writestr(name, data)
    return path


CONTAINER = ('<?xml version="1.0"?><container xmlns="urn:oasis:names:tc:opendocument:xmlns:container" version="1.0">'
             '<rootfiles><rootfile full-path="content.opf" media-type="application/oebps-package+xml"/></rootfiles>'
             "</container>")


def _opf(spine: str) -> str:
    return ('<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0">'
            '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>T</dc:title></metadata>'
            '<manifest><item id="c1" href="c1.xhtml" media-type="application/xhtml+xml"/></manifest>'
            f"{spine}</package>")


def test_epub_without_a_spine_is_refused(tmp_path):
    page = "<html><body><p>Some text of a chapter.</p></body></html>"
    path = _epub(tmp_path / "nospine.epub", {"META-INF/container.xml": CONTAINER, "content.opf": _opf(""), "c1.xhtml": page})
    with pytest.raises(DocumentError, match="no spine"):
        load_document(path)
    fine = _epub(tmp_path / "spine.epub", {"META-INF/container.xml": CONTAINER,
                                           "content.opf": _opf('<spine><itemref idref="c1"/></spine>'), "c1.xhtml": page})
    assert load_document(fine).text == "Some text of a chapter.\n"


def test_epub_listing_a_file_it_does_not_contain_is_refused(tmp_path):
    path = _epub(tmp_path / "missing.epub", {"META-INF/container.xml": CONTAINER,
                                             "content.opf": _opf('<spine><itemref idref="c1"/></spine>')})
    with pytest.raises(DocumentError, match="does not contain"):
        load_document(path)


def test_drm_protected_epub_is_refused_but_obfuscated_fonts_are_fine(tmp_path):
    page = "<html><body><p>Some text of a chapter.</p></body></html>"
    files = {"META-INF/container.xml": CONTAINER, "content.opf": _opf('<spine><itemref idref="c1"/></spine>'),
             "c1.xhtml": page}

    def encryption(uri):
        return ('<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container" '
                'xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData>'
                '<enc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>'
                f'<enc:CipherData><enc:CipherReference URI="{uri}"/></enc:CipherData></enc:EncryptedData></encryption>')

    locked = _epub(tmp_path / "drm.epub", {**files, "META-INF/encryption.xml": encryption("c1.xhtml")})
    with pytest.raises(DocumentError, match="DRM-protected"):
        load_document(locked)
    fonts = _epub(tmp_path / "fonts.epub", {**files, "META-INF/encryption.xml": encryption("fonts/serif.otf")})
    assert load_document(fonts).text == "Some text of a chapter.\n"


def test_truncated_epub_is_refused(tmp_path):
    raw = (FIXTURES / "scandal_epub3.epub").read_bytes()
    path = tmp_path / "cut.epub"
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DocumentError, match="EPUB"):
        load_document(path)


def _bomb(path, members: int, size: int):
    """Members of `size` bytes of markup each, written a MiB at a time (so
    that this process stays small: a child's peak RSS counts its fork)."""
    spine = "".join(f'<itemref idref="c{i}"/>' for i in range(members))
    manifest = "".join(f'<item id="c{i}" href="c{i}.xhtml" media-type="application/xhtml+xml"/>' for i in range(members))
    opf = _opf(f"<spine>{spine}</spine>").replace(
        '<manifest><item id="c1" href="c1.xhtml" media-type="application/xhtml+xml"/></manifest>', f"<manifest>{manifest}</manifest>")
    _epub(path, {"META-INF/container.xml": CONTAINER, "content.opf": opf})
    spaces = b" " * 2**20
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
        for i in range(members):
            with archive.open(f"c{i}.xhtml", "w", force_zip64=True) as member:
                member.write(b"<html><body><p>")
                for _ in range(size // len(spaces)):
                    member.write(spaces)
                member.write(b"</p></body></html>")
    return path


def test_zip_bomb_member_is_refused_before_it_is_decompressed(tmp_path):
    path = _bomb(tmp_path / "bomb.epub", 1, 200 * 2**20)
    assert path.stat().st_size < 2**20  # 200 MiB of markup in well under 1 MiB
    with pytest.raises(DocumentError, match="zip bomb"):
        load_document(path)


@pytest.mark.slow
def test_zip_bomb_spread_over_many_members_stays_in_bounded_memory(tmp_path):
    """Each member under the per-file cap, together over the whole-book cap:
    refused, and the reading process never holds more than a member at once."""
    path = _bomb(tmp_path / "bombs.epub", 12, 30 * 2**20)
    script = (PEAK_KIB_SOURCE + "import sys\nfrom pipelines.documents import load_document, DocumentError\n"
              f"try:\n    load_document({str(path)!r})\nexcept DocumentError as exc:\n    print(exc)\n"
              "    print(peak_kib(), file=sys.stderr)\n    sys.exit(3)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 3, result.stderr
    assert "zip bomb" in result.stdout
    peak_mib = int(result.stderr.split()[-1]) / 1024
    assert peak_mib < 200, f"peak RSS {peak_mib:.0f} MiB for 360 MiB of decompressed markup"


@pytest.mark.skipif(not SHARED_EPUB.is_file(), reason="needs ../shared/data/epub")
def test_gutenberg_pride_and_prejudice_epub():
    """The issue's bar: word recall >= 0.99 against the plain-text novel and
    all 61 chapters found as sections."""
    document = load_document(SHARED_EPUB)
    novel = (SHARED_DATA / "books" / "austen_prideprejudice.txt").read_text(encoding="utf-8")
    assert recall(words(novel), words(document.text)) >= 0.99
    chapters = [s for s in document.sections if re.fullmatch(r"Chapter \d+", s.title)]
    assert [s.title for s in chapters] == [f"Chapter {n}" for n in range(1, 62)]
    for chapter in chapters:
        assert document.text[chapter.start:].startswith(chapter.title + "\n\n")
    assert "Gutenberg" not in document.text and "Produced by" not in document.text
    assert document.text.startswith("PRIDE AND PREJUDICE")
    assert document.metadata["gutenberg"]["ebook"] == 1342


def _rewrite(source, target, change) -> None:
    """A copy of an EPUB with change(name, data) -> data applied to each member."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            new.writestr(info, change(info.filename, old.read(info.filename)))


def test_gutenberg_ebook_number_comes_from_the_package_when_the_header_has_none(tmp_path):
    """Gutenberg's newer headers ("The Project Gutenberg eBook of ...") need not
    carry "[EBook #N]"; the package's identifier does."""
    path = tmp_path / "pg1661.epub"

    def change(name, data):
        if name.endswith(".opf"):
            return re.sub(rb"<dc:identifier([^>]*)>[^<]*<", rb"<dc:identifier\1>http://www.gutenberg.org/ebooks/1661<", data)
        return data.replace(b"[EBook #1661]", b"")

    _rewrite(FIXTURES / "scandal_epub3.epub", path, change)
    assert b"#1661" not in b"".join(zipfile.ZipFile(path).read(n) for n in zipfile.ZipFile(path).namelist()
                                    if not n.endswith(".opf"))
    document = load_document(path)
    assert document.metadata["gutenberg"]["ebook"] == 1661
    assert load_document(FIXTURES / "scandal_epub3.epub").metadata["gutenberg"]["ebook"] == 1661


def encrypted_copy(source, target) -> None:
    """The EPUB with every entry flagged as encrypted (bit 0 of the general purpose
    flags, in the local headers and the central directory), as a password-protected
    zip has them; zipfile cannot write real ZipCrypto."""
    data = bytearray(open(source, "rb").read())
    for signature, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (found := data.find(signature, start)) >= 0:
            data[found + flags_at] |= 0x1
            start = found + 4
    open(target, "wb").write(bytes(data))


def test_password_protected_epub_is_refused_with_one_line(tmp_path):
    path = tmp_path / "locked.epub"
    encrypted_copy(FIXTURES / "scandal_epub2.epub", path)
    with pytest.raises(DocumentError) as error:
        load_document(path)
    message = str(error.value)
    assert message.startswith(str(path)) and "password-protected" in message
    assert "ZipInfo" not in message and "\n" not in message
