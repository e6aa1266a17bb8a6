"""Presidio recognisers for personal data the built-in patterns miss: EU phone numbers, postal
addresses of several countries, dates of birth, and person names introduced by a cue.

All are offline and deterministic. Names without a cue come from the spaCy NER model (pii.yaml
`engine: spacy`); these recognisers make the model tier's recall hold across locales and add the
things a general NER model does not label (a street address is not one entity for it, a date of
birth is only a DATE).
"""

from __future__ import annotations

import re
from typing import Any

import phonenumbers
from presidio_analyzer import EntityRecognizer, RecognizerResult

# EU member states plus the EEA, Switzerland and the UK (numbers written in national format).
EU_REGIONS = ("AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT", "LV",
              "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE", "IS", "LI", "NO", "CH", "GB")

_INTL = re.compile(r"(?<![\w+])(?:\+|00)[1-9][\d \-./()]{6,20}\d(?!\w)")
_NATIONAL = re.compile(r"(?<![\w+\-./])\(?0[\d \-./()]{6,16}\d(?![\w\-])")
_DATE_LIKE = re.compile(r"\d{1,4}[./\-]\d{1,2}[./\-]\d{2,4}|\d{1,2}[./\-]\d{4}")
# Countries without a trunk prefix (ES, PL, PT, DK, NO, CZ, ...): grouped digits, only after a phone cue.
_NATIONAL_NO_TRUNK = re.compile(r"(?<![\w+\-./,])[1-9]\d{1,3}(?:[ \-.]\d{2,6}){1,4}(?![\w\-])")
_PHONE_CONTEXT = re.compile(
    r"(?i)\b(phone|mobile|cell|tel|telephone|call|ring|text|whatsapp|fax|my number|reach|contact|handy|telefon|"
    r"rufnummer|t[ée]l[ée]phone|portable|m[oó]vil|tel[eé]fono|cellulare|telefoon|mobiel|numer|nummer|número)\b"
)


class EuPhoneRecognizer(EntityRecognizer):
    """International numbers valid for their country code, and national (trunk `0`) numbers valid in
    any EU/EEA country, checked with `phonenumbers` (only candidates are parsed, so it stays cheap)."""

    def __init__(self, supported_language: str = "en") -> None:
        super().__init__(supported_entities=["PHONE_NUMBER"], name="EuPhoneRecognizer",
                         supported_language=supported_language)

    def load(self) -> None:  # nothing to load
        return None

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[RecognizerResult]:
        results: list[RecognizerResult] = []
        for m in _INTL.finditer(text):
            raw = m.group(0)
            digits = re.sub(r"\D", "", raw)
            candidate = "+" + digits[2:] if raw.startswith("00") else "+" + digits
            try:
                number = phonenumbers.parse(candidate, None)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(number):
                results.append(self._result(m.start(), m.end(), 0.7))
        candidates = list(_NATIONAL.finditer(text))
        candidates += [m for m in _NATIONAL_NO_TRUNK.finditer(text)
                       if _PHONE_CONTEXT.search(text[max(0, m.start() - 40) : m.start()])]
        for m in candidates:
            raw = m.group(0)
            if _DATE_LIKE.fullmatch(raw.strip("()")):
                continue  # 02/11/2026 is a date, whatever phonenumbers thinks
            digits = re.sub(r"\D", "", raw)
            if not 7 <= len(digits) <= 13 or len(set(digits)) < 3:
                continue
            separated = bool(re.search(r"[ \-./()]", raw.strip("()")))
            context = bool(_PHONE_CONTEXT.search(text[max(0, m.start() - 40) : m.start()]))
            if not (separated or context):
                continue  # a bare run of digits is more often an order or account number
            for region in EU_REGIONS:
                try:
                    number = phonenumbers.parse(raw, region)
                except phonenumbers.NumberParseException:
                    continue
                if phonenumbers.is_valid_number_for_region(number, region):
                    results.append(self._result(m.start(), m.end(), 0.6 if context else 0.45))
                    break
        return results

    def _result(self, start: int, end: int, score: float) -> RecognizerResult:
        return RecognizerResult(entity_type="PHONE_NUMBER", start=start, end=end, score=score,
                                recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                                                      RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id})


class _GroupRecognizer(EntityRecognizer):
    """Regexes whose named group `v` is the value; the rest of the match is context (a cue)."""

    def __init__(self, entity: str, name: str, patterns: list[re.Pattern[str]], score: float,
                 supported_language: str = "en") -> None:
        self._patterns = patterns
        self._score = score
        super().__init__(supported_entities=[entity], name=name, supported_language=supported_language)

    def load(self) -> None:
        return None

    def accept(self, value: str) -> bool:
        return True

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[RecognizerResult]:
        out: list[RecognizerResult] = []
        for pattern in self._patterns:
            for m in pattern.finditer(text):
                start, end = m.span("v")
                if end > start and self.accept(text[start:end]):
                    out.append(RecognizerResult(
                        entity_type=self.supported_entities[0], start=start, end=end, score=self._score,
                        recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                                              RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id}))
        return out


_MONTHS = (r"(?:jan(?:uary|uar|vier|eiro)?|feb(?:ruary|ruar)?|f[ée]v(?:rier)?|m[aä]r(?:ch|z|s)?|apr(?:il)?|avr(?:il)?|"
           r"may|mai|jun(?:e|i)?|juin|jul(?:y|i)?|juil(?:let)?|aug(?:ust)?|ao[uû]t|sep(?:t(?:ember|embre)?)?|"
           r"o[ck]t(?:ober|obre)?|nov(?:ember|embre)?|de[cz](?:ember|embre)?|d[ée]c(?:embre)?|"
           r"enero|febrero|marzo|abril|mayo|junio|julio|agosto|septiembre|octubre|noviembre|diciembre|"
           r"gennaio|febbraio|aprile|maggio|giugno|luglio|settembre|ottobre|dicembre|"
           r"januari|februari|maart|mei|juni|juli|augustus|oktober)\.?")
_DATE = (rf"(?:\d{{4}}[-/.]\d{{1,2}}[-/.]\d{{1,2}}|\d{{1,2}}[-/.]\d{{1,2}}[-/.](?:\d{{4}}|\d{{2}})"
         rf"|\d{{1,2}}(?:st|nd|rd|th|er|º)?\.?\s+(?:of\s+|de\s+)?{_MONTHS}(?:\s+de)?,?\s+\d{{4}}"
         rf"|{_MONTHS}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}})")
_DOB_CUE = (r"(?:born(?:\s+on)?|d\.?\s?o\.?\s?b\.?|date\s+of\s+birth|birth\s?date|birthday|b\.|"
            r"geboren(?:\s+am)?|geb\.|geburtsdatum|geburtstag|n[ée]e?\s+le|date\s+de\s+naissance|"
            r"fecha\s+de\s+nacimiento|nacid[oa]\s+el|nat[oa]\s+il|data\s+di\s+nascita|"
            r"geboortedatum|geboren\s+op|data\s+urodzenia|urodzon[ya])")
DOB_PATTERNS = [
    re.compile(rf"(?i)\b{_DOB_CUE}\s*(?:is|was|:|-|=|ist|est|es|è|on)?\s*(?:the\s+)?(?P<v>{_DATE})"),
    # "12.03.1980 (DOB)": the lookahead keeps the date alternation from running at every position
    re.compile(rf"(?i)(?=[\w.\- /,]{{6,30}}\(\s*(?:dob|date of birth|born|geb\.?)\s*\))(?P<v>{_DATE})"),
]

# Street addresses. A house number and a street word of the country's pattern are both required,
# so "Main Street" alone or "3 items" stays; a following postcode and town are included.
_W = r"[A-ZÀ-ÖØ-Þ][\w'’\-À-ÖØ-öø-ÿ]*"  # a capitalised word, any Latin script
_W_ANY = r"[\wÀ-ÖØ-öø-ÿ'’\-.]+"
_EN_SUFFIX = (r"(?:street|st|avenue|ave|road|rd|lane|ln|drive|dr|court|ct|boulevard|blvd|way|place|pl|square|sq|"
              r"terrace|close|crescent|parkway|pkwy|highway|hwy|circle|cir|trail|trl|row|walk|mews|hill|grove|"
              r"gardens|park|green|rise|vale|view|villages?|ports?|points?|ridges?|routes?|heights|junctions?|"
              r"knolls?|manors?|meadows?|mills?|roads|streets|courts|drives|lanes|plains?|springs?|stations?|"
              r"summits?|tunnels?|turnpike|unions?|valleys?|viaducts?|wells?|brooks?|burgs?|bypass|camps?|"
              r"canyons?|capes?|causeway|centers?|centres?|cliffs?|clubs?|commons?|corners?|coves?|creeks?|"
              r"crossing|curves?|dales?|dams?|divides?|estates?|expressway|extensions?|falls?|ferry|fields?|"
              r"flats?|fords?|forests?|forges?|forks?|fort|freeway|glens?|harbors?|harbours?|havens?|hollows?|"
              r"inlets?|islands?|isles?|keys?|lakes?|landing|light|loaf|locks?|lodge|loop|mall|missions?|"
              r"motorway|mount|mountains?|necks?|orchards?|oval|pass|passage|paths?|pike|pines?|plaza|radial|"
              r"ranch|rapids?|rest|river|shoals?|shores?|skyway|squares|stream|throughway|trace|track|"
              r"trafficway|underpass|vistas?|wall|ways|wharf|cove|shoal|spur|drove|lanes)\b\.?")
_UNIT = r"(?:,?\s*(?i:apt\.?|apartment|suite|ste\.?|unit|flat|floor|fl\.?|#)\s*[\w\-]+)?"
_US_TAIL = r"(?:,?\s+" + _W + r"(?:\s+" + _W + r"){0,2},?\s+[A-Z]{2}\s+\d{5}(?:-\d{4})?)?"
_UK_POSTCODE = r"[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}"
_EU_TAIL = (r"(?:,?\s+(?:[A-Z]{1,2}-)?\d{4,5}(?:\s?[A-Z]{2})?\s+" + _W + r"(?:[\s\-]" + _W + r"){0,2}"
            r"(?:\s*\([A-Z]{2}\))?)?")
ADDRESS_PATTERNS = [
    # en: 123 Main Street Apt. 4, Springfield, IL 62704 / 12 Baker St, London NW1 6XE
    re.compile(rf"(?P<v>\b\d{{1,5}}[A-Za-z]?\s+(?:{_W}\s+){{0,3}}(?i:{_EN_SUFFIX}){_UNIT}{_US_TAIL}"
               rf"(?:,?\s+{_W}(?:\s+{_W})?,?\s+{_UK_POSTCODE})?)"),
    # UK without a house number: Flat 3, Smith Roads, Newtown, W1 2AB (a postcode anchors it)
    re.compile(rf"(?P<v>\b(?:(?:flat|studio|apartment|unit)\s+\d+[A-Za-z]?,?\s+)?(?:{_W}\s+){{1,3}}(?i:{_EN_SUFFIX})"
               rf",?\s+(?:{_W}\s+){{0,2}}{_W},?\s+{_UK_POSTCODE})\b"),
    # de/nl/nordic: Hauptstraße 12a, 10115 Berlin / Kerkstraat 5, 1234 AB Amsterdam
    re.compile(r"(?P<v>\b[A-ZÄÖÜ][\wäöüß\-]*?(?i:stra(?:ß|ss)e|str\.|weg|gasse|allee|platz|ring|damm|ufer|"
               r"chaussee|steig|pfad|markt|hof|straat|laan|plein|gracht|kade|singel|dijk|steeg|gatan|vägen|"
               r"gade|vej|gata|veien|katu|tie|utca|ulica|ul\.)(?:\s+" + _W + r"){0,2}\s+\d{1,4}\s?[a-zA-Z]?"
               r"(?:\s*[-/]\s*\d{1,4})?\b" + _EU_TAIL + r")"),
    # de two-word streets: Am Markt 3 / An der Kirche 5 / Zur Mühle 2 (with a postcode and town)
    re.compile(r"(?P<v>\b(?:Am|An der|An den|Auf der|Im|In der|Zum|Zur|Unter den)\s+" + _W + r"\s+\d{1,4}\s?[a-z]?"
               r",?\s+\d{5}\s+" + _W + r")"),
    # fr: 12, rue de la Paix 75002 Paris / 3 avenue Victor Hugo
    re.compile(r"(?P<v>\b\d{1,4}(?:\s?(?:bis|ter))?,?\s+(?i:rue|avenue|av\.|boulevard|bd|place|chemin|all[ée]e|"
               r"impasse|quai|route|cours|passage|square|voie|rond-point|faubourg|sentier|r[ée]sidence)\s+"
               r"(?:(?:de|du|des|de la|de l'|d'|la|le|les|l')\s*)?" + _W_ANY + r"(?:\s+" + _W + r"){0,3}"
               + _EU_TAIL + r")(?=[\s,.;)]|$)"),
    # es/it/pt: Calle Mayor 5, 28013 Madrid / Via Roma 10, 00184 Roma (RM) / Rua Augusta 12
    re.compile(r"(?P<v>\b(?i:calle|c/|avenida|avda\.?|av\.|paseo|plaza|pza\.?|camino|ronda|carrer|travesía|travesia|"
               r"glorieta|callejón|callejon|urbanización|urbanizacion|pasaje|cuesta|via|viale|piazza|piazzale|"
               r"corso|largo|vicolo|contrada|borgo|strada|rotonda|rua|travessa|praça|praca|alameda|estrada|"
               r"ulica|ul\.|aleja|al\.|náměstí|ulice|utca|út|tér|strada|bulevardul|calea)\s+"
               r"(?:(?:de|del|de la|de los|de las|di|della|dei|delle|do|da|dos|das)\s+)?"
               r"" + _W_ANY + r"(?:\s+" + _W_ANY + r"){0,3}?,?\s*(?:n\.?[ºo°]?\s*)?\d{1,4}[a-zA-Z]?"
               r"(?:\s*(?:piso|puerta|esc\.?|int\.?|scala|\d+º)\s*[\w/º]+)*" + _EU_TAIL + r")(?=[\s,.;)]|$)"),
]

_POSTCODE = re.compile(
    r"(?<![\w-])(?:\d{5}|\d{2}-\d{3}|\d{4}\s?[A-Z]{2}|[A-Z]{1,2}\d[A-Z\d]?\s\d[A-Z]{2}|(?:[A-Z]{1,2}-)?\d{4})(?![\w-])"
)
_TOKEN = re.compile(r"\S+")
STREET_WORDS = {
    "rue", "avenue", "av.", "boulevard", "bd", "chemin", "allée", "impasse", "quai", "route", "place", "via", "viale",
    "piazza", "corso", "largo", "vicolo", "strada", "contrada", "borgo", "calle", "c/", "avenida", "avda.", "paseo",
    "plaza", "camino", "ronda", "carrer", "rua", "travessa", "praça", "aleja", "al.", "ulica", "ul.", "plac",
    "osiedle", "os.", "street", "st.", "road", "rd.", "lane", "drive", "flat", "apt.", "apartment", "suite", "unit",
    "studio", "house", "cottage",
}
PARTICLES = {"de", "del", "della", "di", "da", "do", "dos", "das", "du", "des", "la", "le", "les", "l'", "d'", "van",
             "der", "den", "von", "y", "e", "el", "los", "las", "sur", "upon", "the", "of",
             "bis", "ter", "&"}
_HOUSE_NO = re.compile(r"^\(?\d{1,4}[a-zA-Z]?(?:[-/]\d{1,4}[a-zA-Z]?)?[,.]?$")


class PostcodeAddressRecognizer(EntityRecognizer):
    """An address anchored on a postcode: the street (a house number with a capitalised name, or a
    street word) to its left and the town to its right, within one clause. Locale-agnostic, so the
    order of number, street, postcode and town does not matter."""

    def __init__(self, supported_language: str = "en", max_tokens: int = 10) -> None:
        self.max_tokens = max_tokens
        super().__init__(supported_entities=["STREET_ADDRESS"], name="PostcodeAddressRecognizer",
                         supported_language=supported_language)

    def load(self) -> None:
        return None

    @staticmethod
    def _address_like(tok: str) -> bool:
        bare = tok.strip(",;()")
        low = bare.lower()
        return bool(bare) and (bare[0].isupper() or _HOUSE_NO.match(bare) is not None or low in STREET_WORDS
                               or low in PARTICLES or low.startswith(("l'", "d'")))

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[RecognizerResult]:
        out: list[RecognizerResult] = []
        tokens = [(m.start(), m.end(), m.group(0)) for m in _TOKEN.finditer(text)]
        for m in _POSTCODE.finditer(text):
            # the token that holds the postcode's first character
            idx = next((i for i, (s, e, _) in enumerate(tokens) if s <= m.start() < e), None)
            if idx is None:
                continue
            left = idx
            while left > 0 and idx - left < self.max_tokens:
                tok = tokens[left - 1][2]
                if not self._address_like(tok) or tok.endswith((".", "!", "?", ":")) and tok.lower() not in STREET_WORDS:
                    break
                left -= 1
            while left < idx and tokens[left][2].lower() in PARTICLES:
                left += 1  # "do Marek Boba, ulica ...": the preposition is not part of the address
            part = [t for _, _, t in tokens[left:idx]]
            # the postcode itself may be preceded by "NJ"-style state codes; a 4-digit code needs a street word
            has_number = any(_HOUSE_NO.match(t.strip(",;()")) for t in part)
            has_name = any(t.strip(",;()")[:1].isupper() for t in part)
            has_street = any(t.strip(",;()").lower() in STREET_WORDS for t in part)
            four_digits = re.fullmatch(r"(?:[A-Z]{1,2}-)?\d{4}", m.group(0)) is not None
            if not ((has_number and has_name and not four_digits) or has_street):
                continue
            # continue after the token holding the postcode's last character ("1234 AB," is two tokens)
            right = next((i for i in range(idx, len(tokens)) if tokens[i][0] <= m.end() - 1 < tokens[i][1]), idx)
            last_end = m.end()
            if not tokens[right][2].rstrip(",;.").endswith(m.group(0)[-1:]) or tokens[right][2].endswith("."):
                right = len(tokens)  # the postcode ends a sentence: no town after it
            while right + 1 < len(tokens) and right - idx < 4:
                tok = tokens[right + 1][2]
                bare = tok.strip(",;.()")
                if not bare or not (bare[0].isupper() or re.fullmatch(r"\(?[A-Z]{2}\)?[.,;]?", tok)):
                    break
                right += 1
                last_end = tokens[right][1]
                if tok.endswith((",", ".", ";")):
                    break
            # a town before the postcode ("Weaverside, NJ 52554") is already in `part`; trim punctuation
            start = tokens[left][0] if left < idx else m.start()
            end = max(last_end, m.end())
            while end > start and text[end - 1] in ",.;: ":
                end -= 1
            out.append(RecognizerResult(entity_type="STREET_ADDRESS", start=start, end=end, score=0.6,
                                        recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                                                              RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id}))
        return out


NAME_CUES = [
    re.compile(r"(?:(?i:my name is|my name's|i am|i'm|this is|name:|named|called|signed|regards,|sincerely,|"
               r"thanks,|cheers,|best,|dear|hello|hi|contact|customer|applicant|patient|client|tenant|employee|"
               r"ich bin|ich heiße|mein name ist|je m'appelle|je suis|me llamo|mi nombre es|soy|mi chiamo|sono|"
               r"ik ben|mijn naam is|ik heet|nazywam się|jestem|ask for|speak to|talk to|"
               r"attn:?|c/o|mr\.?|mrs\.?|ms\.?|miss|dr\.?|prof\.?|herr|frau|monsieur|madame|mme\.?|m\.|señor|"
               r"señora|sr\.?|sra\.?|signor|signora|sig\.?|sig\.ra|dhr\.?|mevr\.?|pan|pani)\s+)"
               r"(?P<v>(?:(?:van|von|de|der|den|da|di|del|della|du|le|la|ten|ter|zu|y|dos|das|O'|Mc)\s+)*"
               r"[A-ZÀ-ÖØ-ÞŁŚŻŹĆŃ][a-zà-öø-ÿłśżźćńąęó'’\-]+(?:\s+(?:(?:van|von|de|der|den|da|di|del|della|du|le|la|"
               r"ten|ter|zu|y|dos|das)\s+)*[A-ZÀ-ÖØ-ÞŁŚŻŹĆŃ][a-zà-öø-ÿłśżźćńąęó'’\-]+(?:-[A-ZÀ-ÖØ-Þ][a-zà-öø-ÿ]+)?)"
               r"{1,3})"),
]
# Capitalised words a cue can precede that are not names.
_NOT_NAMES = {
    "the", "a", "an", "order", "invoice", "customer", "support", "team", "account", "monday", "tuesday",
    "wednesday", "thursday", "friday", "saturday", "sunday", "january", "february", "march", "april", "june",
    "july", "august", "september", "october", "november", "december", "acme", "globex", "paypal", "visa",
    "mastercard", "iban", "ssn", "email", "phone", "premium", "gold", "standard", "platinum", "service",
    "services", "sales", "billing", "shipping", "delivery", "refund", "returns", "help", "desk", "europe",
    "germany", "france", "spain", "italy", "london", "paris", "berlin", "madrid", "rome", "amsterdam",
    "street", "road", "avenue", "dhl", "ups", "fedex", "amazon", "google", "microsoft", "apple", "thanks",
    "regards", "hello", "please", "ticket", "tracking", "express", "new", "york", "card", "bank",
    "mein", "mijn", "naam", "name", "je", "m'appelle", "appelle", "rechnung", "nazywam", "ich", "heiße", "dear",
    "bitte", "merci", "grazie", "gracias", "danke", "hallo", "bonjour", "hola", "ciao", "hoi",
}


_CAP = r"[A-ZÀ-ÖØ-ÞŁŚŻŹĆŃ][a-zà-öø-ÿłśżźćńąęó'’]+(?:-[A-ZÀ-ÖØ-Þ][a-zà-öø-ÿłśżźćńąęó]+)?"
_PARTICLE = r"(?:(?:van|von|de|der|den|da|di|del|della|du|le|la|ten|ter|zu|y|dos|das)\s+)"
_FULL_NAME = rf"{_CAP}(?:\s+{_PARTICLE}*{_CAP}){{1,3}}"
_VERBS = (r"called|asked|said|wrote|wants|needs|has|had|is|was|reported|requested|confirmed|moved|lives|lived|paid|"
          r"ordered|emailed|phoned|rang|complained|returned|sent|placed|cancelled|canceled|will|would|can|could|"
          r"should|says|told|mentioned|replied|signed|agreed|noticed|received|bought|opened|closed|left|joined|"
          r"prefers|prefer|works|called|contacted|visited|booked|updated|changed")
NAME_CUES.extend([
    # a full name (two or more capitalised words) after a preposition or a reporting phrase
    re.compile(rf"(?:\b(?i:for|to|with|from|by|about|according to|spoke with|spoke to|on behalf of|and|or|"
               rf"cc|von|für|an|mit|pour|avec|para|con|per|voor|met|dla|z)\s+)(?P<v>{_FULL_NAME})"),
    # a full name followed by a verb ("Joshua Wood called ...")
    re.compile(rf"(?P<v>{_FULL_NAME})(?=,?\s+(?:{_VERBS})\b)"),
])


_TITLE = (r"(?:Prof\.|Dr\.|Dott\.(?:ssa)?|Sig\.(?:ra)?|Mr\.?|Mrs\.?|Ms\.?|Miss|Mx\.?|Herr|Frau|pan|pani|Pan|Pani|"
          r"Dipl\.-[A-Z][a-z]+\.|Univ\.\s?Prof\.|Ing\.|Mag\.|Mme\.?|Mlle\.?|M\.|Sr\.|Sra\.|Srta\.|Dña\.|D\.|"
          r"dhr\.|mevr\.|Dhr\.|Mevr\.|Lic\.|Avv\.|Arch\.|Rag\.)")
_DEGREE = r"(?:B\.A\.|B\.Sc\.|B\.Eng\.|M\.A\.|M\.Sc\.|M\.Eng\.|MBA\.?|Ph\.?D\.?|MD|DDS|DVM|Jr\.|Sr\.|II|III|IV)"
NAME_CUES.append(
    # a title, then one or more capitalised words, then degrees: "Prof. Dr. Jolanta Ullmann B.Eng."
    re.compile(rf"(?P<v>(?<!\w)(?:{_TITLE}\s*){{1,3}}{_CAP}(?:\s+{_PARTICLE}*{_CAP}){{0,3}}(?:,?\s+{_DEGREE})*)")
)
NAME_CUES.append(re.compile(rf"(?P<v>{_CAP}(?:\s+{_PARTICLE}*{_CAP}){{1,3}}(?:,?\s+{_DEGREE})+)"))

_LEADING_NOT_NAMES = _NOT_NAMES | {"yesterday", "today", "tomorrow", "also", "dear", "hi", "hello", "mr", "mrs", "ms",
                                   "dr", "rechnung", "bitte", "merci", "stuur", "spedite", "envíen", "proszę"}


class NameCueRecognizer(_GroupRecognizer):
    def accept(self, value: str) -> bool:
        words = [w.lower().strip(".'’") for w in value.split()]
        return not any(w in _NOT_NAMES for w in words)

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[RecognizerResult]:
        out = []
        for pattern in self._patterns:
            for m in pattern.finditer(text):
                start, end = m.span("v")
                # "Yesterday Pina Ferrabosco asked": drop leading capitalised non-names, keep the rest
                while True:
                    word = re.match(r"\S+\s+", text[start:end])
                    if word is None or word.group(0).strip().lower().strip(".,") not in _LEADING_NOT_NAMES:
                        break
                    start += word.end()
                if not text[start:end].split() or not self.accept(text[start:end]):
                    continue
                out.append(RecognizerResult(
                    entity_type="PERSON", start=start, end=end, score=self._score,
                    recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                                          RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id}))
        return out


def extra_recognizers(language: str) -> list[EntityRecognizer]:
    address = [_GroupRecognizer("STREET_ADDRESS", "StreetAddressRecognizer", ADDRESS_PATTERNS, 0.6, language)]
    dob = _GroupRecognizer("DATE_OF_BIRTH", "DateOfBirthRecognizer", DOB_PATTERNS, 0.7, language)
    names = NameCueRecognizer("PERSON", "NameCueRecognizer", NAME_CUES, 0.55, language)
    return [EuPhoneRecognizer(language), *address, PostcodeAddressRecognizer(language), dob, names]



def plausible_name(value: str) -> bool:
    """Drop NER PERSON spans that are product codes or ordinary capitalised words ("Order ORD-1")."""
    if any(ch.isdigit() for ch in value) or "@" in value or "/" in value:
        return False
    words = [w.strip(".,'’()").lower() for w in value.split()]
    return any(w and w not in _NOT_NAMES for w in words) and any(ch.isupper() for ch in value)


def trim_name(text: str, start: int, end: int) -> tuple[int, int] | None:
    """A model's PERSON span without leading cue words ("Customer Mark Parrish"); None if nothing is left."""
    while True:
        word = re.match(r"\S+\s+", text[start:end])
        if word is None or word.group(0).strip().lower().strip(".,") not in _LEADING_NOT_NAMES:
            break
        start += word.end()
    value = text[start:end]
    if start >= end or "\n" in value or not plausible_name(value):
        return None
    # The small model tags single capitalised words in headings and product names ("Apple Pay",
    # "Klarna", "Faulty"); a one-word name counts only right after a greeting or introduction.
    if len(value.split()) == 1 and not _SINGLE_NAME_CUE.search(text[max(0, start - 24) : start]):
        return None
    return start, end


_SINGLE_NAME_CUE = re.compile(r"(?i)(?:\b(?:hi|hello|hey|dear|thanks|regards|cheers|i'm|i am|name is|called|"
                              r"this is|ask for|speak to|mr\.?|mrs\.?|ms\.?|dr\.?|herr|frau|mme\.?|"
                              r"ich bin|je suis|soy|sono|ik ben)|,)\s*$")
