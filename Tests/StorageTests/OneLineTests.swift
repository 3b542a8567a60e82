import Testing
import Storage

/// Error messages and printed lines: one line whatever a value in them holds.
@Suite struct OneLineTests {
    @Test func lineBreaksAndControlCharactersAreEscapedTabsKept() {
        #expect(oneLine("a\nb\r\u{1}\tc\u{7F}\u{85}\u{2028}é") == "a\\nb\\r\\u{01}\tc\\u{7F}\\u{0085}\\u{2028}é")
        #expect(oneLine("plain: 2 ranks") == "plain: 2 ranks")
    }

    @Test func errorLinesAreCutAtTheLimit() {
        #expect(errorLine(String(repeating: "x", count: 5000)) == String(repeating: "x", count: 997) + "...")
        #expect(errorLine("short\n", limit: 10) == "short\\n")
    }
}
