"""Writes a table of contacts the way people's tools save it, for the import tests.

Usage: write_contacts.py TABLE_JSON OUT_DIR

TABLE_JSON is {"header": [...], "rows": [[...], ...]}. Writes, with Python's csv module:
cp1251.csv (Windows-1251, ';', as Excel on a Russian Windows saves it), koi8r.csv (KOI8-R, ','),
bom.csv (UTF-8 with a BOM, ','), utf16.csv (UTF-16 with a BOM, tab-separated, as Excel's
"Unicode text"); and, with openpyxl, contacts.xlsx (a first sheet "Контакты"). Prints "ready".
"""

import csv
import json
import sys
from pathlib import Path

from openpyxl import Workbook


def write_csv(path, table, encoding, delimiter):
    with open(path, "w", encoding=encoding, newline="") as out:
        writer = csv.writer(out, delimiter=delimiter)
        writer.writerow(table["header"])
        writer.writerows(table["rows"])


def main():
    table = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    out = Path(sys.argv[2])
    write_csv(out / "cp1251.csv", table, "cp1251", ";")
    write_csv(out / "koi8r.csv", table, "koi8_r", ",")
    write_csv(out / "bom.csv", table, "utf-8-sig", ",")
    write_csv(out / "utf16.csv", table, "utf-16", "\t")
    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "Контакты"
    sheet.append(table["header"])
    for row in table["rows"]:
        sheet.append([cell if cell != "" else None for cell in row])
    workbook.save(out / "contacts.xlsx")
    print("ready", flush=True)


if __name__ == "__main__":
    main()
