import Foundation
import Testing

@testable import Data

/// tokenizer_pairs_golden.json, written by tools/make_tokenizer_fixtures.py from Hugging Face:
/// `tokenizer([A], [B], truncation=True, max_length=N)` for each pair and max length.
struct GoldenPairs {
    struct Case {
        let pairIndex: Int
        let maxLength: Int
        let ids: [Int32]
        let tokenTypeIds: [Int32]
    }
    let pairs: [(String, String)]
    let cases: [Case]
    /// HF's single call `encode(A, B)` where it differs from the batch call (an empty B).
    let singleCall: [(pairIndex: Int, maxLength: Int, ids: [Int32])]
    /// One batch through HF's DataCollatorWithPadding: pairs, max length, and its three tensors.
    let paddedPairIndices: [Int]
    let paddedMaxLength: Int
    let padded: [String: [Int32]]   // input_ids, attention_mask, token_type_ids, flattened

    static let shared: GoldenPairs = {
        let data = try! Data(contentsOf: fixturesDirectory.appendingPathComponent("tokenizer_pairs_golden.json"))
        let object = try! JSONSerialization.jsonObject(with: data) as! [String: Any]
        func ints(_ value: Any) -> [Int32] { (value as! [NSNumber]).map(\.int32Value) }
        let pairs = (object["pairs"] as! [[String]]).map { ($0[0], $0[1]) }
        let cases = (object["cases"] as! [[Any]]).map {
            Case(pairIndex: ($0[0] as! NSNumber).intValue, maxLength: ($0[1] as! NSNumber).intValue,
                 ids: ints($0[2]), tokenTypeIds: ints($0[3]))
        }
        let single = (object["single_call"] as! [[Any]]).map {
            (pairIndex: ($0[0] as! NSNumber).intValue, maxLength: ($0[1] as! NSNumber).intValue, ids: ints($0[2]))
        }
        let batch = object["padded_batch"] as! [String: Any]
        var padded: [String: [Int32]] = [:]
        for key in ["input_ids", "attention_mask", "token_type_ids"] {
            padded[key] = (batch[key] as! [[NSNumber]]).flatMap { $0.map(\.int32Value) }
        }
        return GoldenPairs(pairs: pairs, cases: cases, singleCall: single,
                           paddedPairIndices: (batch["pair_indices"] as! [NSNumber]).map(\.intValue),
                           paddedMaxLength: (batch["max_length"] as! NSNumber).intValue, padded: padded)
    }()
}

@Suite struct PairTokenizerTests {
    @Test func goldenPairsMatchHuggingFace() throws {
        let tokenizer = try loadTokenizer("minilm-uncased")
        let golden = GoldenPairs.shared
        #expect(golden.cases.count > 500)
        var failures = 0
        for golden in golden.cases {
            let (first, second) = GoldenPairs.shared.pairs[golden.pairIndex]
            let (ids, types) = tokenizer.encodePair(first, second, maxLength: golden.maxLength)
            if ids != golden.ids || types != golden.tokenTypeIds {
                failures += 1
                if failures <= 5 {
                    Issue.record("pair #\(golden.pairIndex) max_length=\(golden.maxLength) \(first.prefix(40).debugDescription) / \(second.prefix(40).debugDescription):\n ours \(ids) \(types)\n   HF \(golden.ids) \(golden.tokenTypeIds)")
                }
            }
        }
        #expect(failures == 0, "\(failures) of \(golden.cases.count) cases differ")
    }

    @Test func goldenCoversEveryTruncationCase() throws {
        // The fixture is worth something only if it has pairs where longest_first keeps both
        // whole, cuts only A, only B, both (with an odd budget, where the longer side gets the
        // extra piece), and an empty B.
        let golden = GoldenPairs.shared
        var kinds = Set<String>()
        let tokenizer = try loadTokenizer("minilm-uncased")
        for golden in golden.cases {
            let (first, second) = GoldenPairs.shared.pairs[golden.pairIndex]
            let fullFirst = tokenizer.encode(first, maxLength: 100_000).count - 2
            let fullSecond = tokenizer.encode(second, maxLength: 100_000).count - 2
            let keptFirst = golden.tokenTypeIds.filter { $0 == 0 }.count - 2
            let keptSecond = golden.tokenTypeIds.filter { $0 == 1 }.count - 1
            let cutFirst = keptFirst < fullFirst, cutSecond = keptSecond < fullSecond
            switch (cutFirst, cutSecond) {
            case (false, false): kinds.insert("whole")
            case (true, false): kinds.insert("A cut")
            case (false, true): kinds.insert("B cut")
            case (true, true): kinds.insert((golden.maxLength - 3) % 2 == 1 ? "both cut, odd budget" : "both cut, even budget")
            }
            if second.isEmpty { kinds.insert("empty B") }
            if fullFirst == fullSecond && cutFirst && (golden.maxLength - 3) % 2 == 1 { kinds.insert("tie, odd budget") }
        }
        #expect(kinds == ["whole", "A cut", "B cut", "both cut, odd budget", "both cut, even budget", "empty B", "tie, odd budget"])
    }

    @Test func emptySecondTextInHuggingFacesSingleCallIsNoPair() throws {
        // HF's single call encode(A, "") drops the pair (Python truthiness); it then equals encode(A).
        let tokenizer = try loadTokenizer("minilm-uncased")
        let golden = GoldenPairs.shared
        #expect(!golden.singleCall.isEmpty)
        for entry in golden.singleCall {
            let (first, second) = golden.pairs[entry.pairIndex]
            #expect(second.isEmpty)
            #expect(tokenizer.encode(first, maxLength: entry.maxLength) == entry.ids)
        }
    }

    @Test func appendsInPlaceAndReportsTheSecondSegment() throws {
        let tokenizer = try loadTokenizer("minilm-uncased")
        var ids: [Int32] = [7, 7]
        let a = "one two three four five six", b = "alpha beta"
        let start = Array(a.utf8).withUnsafeBufferPointer { first in
            Array(b.utf8).withUnsafeBufferPointer { second in
                tokenizer.encodePair(utf8: first, utf8: second, maxLength: 8, appendingTo: &ids)
            }
        }
        let (expected, types) = tokenizer.encodePair(a, b, maxLength: 8)
        #expect(Array(ids.prefix(2)) == [7, 7])
        #expect(Array(ids.dropFirst(2)) == expected)
        #expect(start == types.firstIndex(of: 1))
        #expect(expected.count == 8 && expected.first == tokenizer.classifierTokenId && expected.last == tokenizer.separatorTokenId)
    }

    @Test(arguments: [(3, 5, 10), (0, 0, 5), (10, 0, 5), (7, 7, 6), (7, 7, 5), (2, 9, 5), (9, 2, 5), (100, 1, 0)])
    func longestFirstMatchesTokenizersRules(first: Int, second: Int, budget: Int) {
        // The rules of tokenizers' truncate_encodings (LongestFirst) written out case by case.
        let (keptFirst, keptSecond) = BertTokenizer.longestFirst(first, second, budget: budget)
        #expect(keptFirst <= first && keptSecond <= second)
        if first + second <= budget {
            #expect(keptFirst == first && keptSecond == second)
        } else if min(first, second) * 2 <= budget {
            #expect(keptFirst + keptSecond == budget && min(keptFirst, keptSecond) == min(first, second))
        } else {
            let longer = budget / 2 + budget % 2
            #expect(keptFirst + keptSecond == budget)
            #expect(first > second ? keptFirst == longer : keptSecond == longer)
        }
    }

    @Test func paddedPairBatchMatchesHuggingFaceDataCollatorWithPadding() throws {
        let golden = GoldenPairs.shared
        let indices = golden.paddedPairIndices, maxLength = golden.paddedMaxLength
        let tokenizer = try loadTokenizer("minilm-uncased")
        let encoded = indices.map { tokenizer.encodePair(golden.pairs[$0].0, golden.pairs[$0].1, maxLength: maxLength) }
        let batch = PaddedBatch(sequences: encoded.map(\.ids), labels: [0, 1, 0, 1, 1],
                                secondSegmentStarts: encoded.map { $0.tokenTypeIds.firstIndex(of: 1) ?? $0.ids.count },
                                paddingTokenId: tokenizer.paddingTokenId, maxLength: maxLength)
        #expect(batch.inputIds == golden.padded["input_ids"])
        #expect(batch.attentionMask == golden.padded["attention_mask"])
        #expect(batch.tokenTypeIds == golden.padded["token_type_ids"])
        #expect(batch.tokenTypeIds.contains(1))
    }
}
