/// CSV (a preset's headerless layout, or a header row) and TSV rows.
///
/// CSV quoting is RFC 4180: `""` is a quote; separators and line breaks may appear inside quotes;
/// "\r\n" and "\r" inside a field become "\n" (Python's universal newlines). TSV has no quoting.
extension RowReader {
    /// CSV and TSV files start with a header row.
    private var awaitingHeader: Bool {
        if case .preset = format { return false }
        return headerLine == nil
    }

    mutating func readDelimited(_ input: UnsafeBufferPointer<UInt8>, into result: inout LabeledTexts) throws {
        let preset: DataPreset? = { if case .preset(let preset) = format { return preset } else { return nil } }()
        let count = input.count
        var index = 0
        var line = 1
        if count >= 3 && input[0] == 0xEF && input[1] == 0xBB && input[2] == 0xBF { index = 3 }  // UTF-8 BOM
        while index < count {
            // Blank line.
            if input[index] == 0x0A { index += 1; line += 1; continue }
            if input[index] == 0x0D {
                index += (index + 1 < count && input[index + 1] == 0x0A) ? 2 : 1
                line += 1
                continue
            }
            let recordLine = line
            let recordStart = index
            var problem: RowError? = nil
            do {
                try parseRecord(input, &index, &line, &problem)
            } catch let error as RowError {
                if awaitingHeader { throw DataError("\(path):\(error.line): \(error.reason) (in the header row)") }
                try fail(line: error.line, error.reason, &result)
                // Resynchronise: after an unterminated quote, at the line after the record's
                // first; otherwise at the next line break.
                if error.reason.hasPrefix("unterminated") {
                    index = recordStart
                    line = recordLine
                }
                while index < count && input[index] != 0x0A && input[index] != 0x0D { index += 1 }
                if index < count {
                    index += (input[index] == 0x0D && index + 1 < count && input[index + 1] == 0x0A) ? 2 : 1
                    line += 1
                }
                continue
            }
            if let problem {
                if awaitingHeader { throw DataError("\(path):\(problem.line): \(problem.reason) (in the header row)") }
                try fail(line: problem.line, problem.reason, &result)
                continue
            }
            if let preset {
                try addPresetRow(preset, line: recordLine, into: &result)
            } else if headerLine == nil {
                try readHeader(format.columns!, line: recordLine)
            } else {
                try addRow(line: recordLine, into: &result)
            }
        }
    }

    /// The header row: where the named columns are.
    private mutating func readHeader(_ columns: DataColumns, line: Int) throws {
        func column(_ name: String, _ role: String) throws -> Int {
            let matches = fields.indices.filter { fields[$0].elementsEqual(name.utf8) }
            guard let first = matches.first else {
                let listed = fields.prefix(20).map { "\"\(shown($0))\"" }.joined(separator: ", ") + (fields.count > 20 ? ", ... (\(fields.count) in all)" : "")
                throw DataError("\(path):\(line): no column \"\(name)\" (the \(role)) in the header; its columns are \(listed)")
            }
            guard matches.count == 1 else {
                throw DataError("\(path):\(line): the header has \(matches.count) columns named \"\(name)\" (the \(role)); name each column once")
            }
            return first
        }
        textColumn = try column(columns.text, "text column")
        pairColumn = try columns.textPair.map { try column($0, "text pair column") }
        labelColumn = readsLabels ? try column(columns.label, "label column") : 0
        columnCount = fields.count
        headerLine = line
    }

    private mutating func addRow(line: Int, into result: inout LabeledTexts) throws {
        guard fields.count == columnCount else {
            try fail(line: line, "expected \(columnCount) columns as in the header (line \(headerLine!)), found \(fields.count)", &result)
            return
        }
        let target: RowTarget
        do {
            target = readsLabels ? try self.target(ofField: fields[labelColumn], line: line) : .label(0)
        } catch {
            try fail(line: line, error.reason, &result)
            return
        }
        fields[textColumn].withUnsafeBufferPointer { text in
            if let pairColumn {
                fields[pairColumn].withUnsafeBufferPointer { result.append(text: text, pair: $0, target: target, line: line) }
            } else {
                result.append(text: text, pair: nil, target: target, line: line)
            }
        }
    }

    private mutating func addPresetRow(_ preset: DataPreset, line: Int, into result: inout LabeledTexts) throws {
        guard fields.count == preset.columnNames.count else {
            try fail(line: line, "expected \(preset.columnNames.count) columns (\(preset.columnNames.joined(separator: ", "))), found \(fields.count)", &result)
            return
        }
        let first = preset.firstClassIndex, last = first + preset.labelNames.count - 1
        let field = fields[preset.labelColumn]
        guard readsLabels else {
            appendPresetText(preset, label: 0, line: line, into: &result)
            return
        }
        guard let classIndex = parseInteger(field), classIndex >= first, classIndex <= last else {
            let shown = String(decoding: field.prefix(40), as: UTF8.self)
            try fail(line: line, "\(preset.columnNames[preset.labelColumn]) \"\(shown)\" is not an integer from \(first) to \(last)", &result)
            return
        }
        guard let label = presetLabelIds[classIndex - first] else {
            guard case .fixed(let set) = labels.rule else { preconditionFailure("a preset's own labels are all known") }
            try fail(line: line, "label \"\(preset.labelNames[classIndex - first])\" (\(preset.columnNames[preset.labelColumn]) \(classIndex)) is not one of the \(set.count) labels of \(set.origin) (\(set))", &result)
            return
        }
        appendPresetText(preset, label: label, line: line, into: &result)
    }

    /// The preset's text columns joined by a space, with `label`.
    private mutating func appendPresetText(_ preset: DataPreset, label: Int32, line: Int, into result: inout LabeledTexts) {
        text.removeAll(keepingCapacity: true)
        for (position, column) in preset.textColumns.enumerated() {
            if position > 0 { text.append(0x20) }
            text.append(contentsOf: fields[column])
        }
        text.withUnsafeBufferPointer { result.append(text: $0, pair: nil, label: label, line: line) }
    }

    /// Appends the UTF-8 sequence starting at `index` (a byte >= 0x80) to field `field`, or notes
    /// the first invalid byte in `problem` and skips it.
    private mutating func appendMultibyteCharacter(_ input: UnsafeBufferPointer<UInt8>, _ index: inout Int, into field: Int,
                                                   line: Int, column: Int, _ problem: inout RowError?) {
        let length = validUTF8SequenceLength(input, at: index)
        guard length > 0 else {
            if problem == nil {
                problem = RowError(line: line, reason: "invalid UTF-8 (byte 0x\(String(input[index], radix: 16, uppercase: true)) in column \(column))")
            }
            index += 1
            return
        }
        fields[field].append(contentsOf: UnsafeBufferPointer(rebasing: input[index..<index + length]))
        index += length
    }

    /// Parses one record starting at `index` into `fields`, leaving `index` after its line break.
    /// Structural errors (an unterminated quote, text after a closing quote) throw; a bad byte
    /// sequence is noted in `problem` and the record is read to its end.
    mutating func parseRecord(_ input: UnsafeBufferPointer<UInt8>, _ index: inout Int, _ line: inout Int,
                              _ problem: inout RowError?) throws {
        let count = input.count
        let delimiter = self.delimiter
        var fieldCount = 0
        while true {
            if fields.count == fieldCount { fields.append([]) }
            fields[fieldCount].removeAll(keepingCapacity: true)
            fieldCount += 1
            let column = fieldCount
            if skipInitialSpace {
                while index < count && input[index] == 0x20 { index += 1 }
            }
            if quoting && index < count && input[index] == 0x22 {
                let openingLine = line
                index += 1
                while true {
                    guard index < count else {
                        fields.removeSubrange(fieldCount...)
                        throw RowError(line: openingLine, reason: "unterminated quoted field in column \(column) (a quote opened here is never closed)")
                    }
                    let byte = input[index]
                    if byte == 0x22 {
                        if index + 1 < count && input[index + 1] == 0x22 {
                            fields[fieldCount - 1].append(0x22)
                            index += 2
                            continue
                        }
                        index += 1
                        break
                    }
                    if byte < 0x80 {
                        if byte == 0x0D {  // "\r\n" and "\r" become "\n", as Python reads text files
                            fields[fieldCount - 1].append(0x0A)
                            index += (index + 1 < count && input[index + 1] == 0x0A) ? 2 : 1
                            line += 1
                            continue
                        }
                        if byte == 0x0A { line += 1 }
                        fields[fieldCount - 1].append(byte)
                        index += 1
                    } else {
                        appendMultibyteCharacter(input, &index, into: fieldCount - 1, line: line, column: column, &problem)
                    }
                }
                // After the closing quote: a separator, the end of the line, or the end of the file.
                if index < count && input[index] != delimiter && input[index] != 0x0A && input[index] != 0x0D {
                    fields.removeSubrange(fieldCount...)
                    if line > openingLine {
                        // Most likely a quote left open on the opening line and "closed" by the
                        // first quote of a later row.
                        throw RowError(line: openingLine, reason: "unterminated quoted field in column \(column) (the quote opened on this line is only closed on line \(line), followed by unexpected text)")
                    }
                    throw RowError(line: line, reason: "unexpected text after the closing quote of column \(column) (a quote inside a quoted field must be doubled: \"\")")
                }
            } else {
                while index < count {
                    let byte = input[index]
                    if byte == delimiter || byte == 0x0A || byte == 0x0D { break }
                    if byte < 0x80 {
                        fields[fieldCount - 1].append(byte)
                        index += 1
                    } else {
                        appendMultibyteCharacter(input, &index, into: fieldCount - 1, line: line, column: column, &problem)
                    }
                }
            }
            // Field separator or end of record.
            if index < count && input[index] == delimiter {
                index += 1
                continue
            }
            if index < count {  // line break
                index += (input[index] == 0x0D && index + 1 < count && input[index + 1] == 0x0A) ? 2 : 1
                line += 1
            }
            fields.removeSubrange(fieldCount...)
            return
        }
    }
}

/// A malformed record: where, and why.
struct RowError: Error {
    let line: Int
    let reason: String
}

/// An integer written in ASCII digits, with optional spaces around it and an optional sign.
func parseInteger(_ bytes: [UInt8]) -> Int? {
    var slice = bytes[...]
    while let first = slice.first, first == 0x20 || first == 0x09 { slice = slice.dropFirst() }
    while let last = slice.last, last == 0x20 || last == 0x09 { slice = slice.dropLast() }
    return parseLabelInteger(slice)
}

/// An integer written exactly as ASCII digits with an optional sign (at most 9 digits), as pandas
/// reads an integer column; nil for anything else (the label is then a name).
func parseLabelInteger<Bytes: Collection>(_ bytes: Bytes) -> Int? where Bytes.Element == UInt8 {
    var slice = bytes[...]
    var negative = false
    if let first = slice.first, first == 0x2B || first == 0x2D {
        negative = first == 0x2D
        slice = slice.dropFirst()
    }
    guard !slice.isEmpty, slice.count <= 9 else { return nil }
    var value = 0
    for byte in slice {
        guard byte >= 0x30 && byte <= 0x39 else { return nil }
        value = value * 10 + Int(byte - 0x30)
    }
    return negative ? -value : value
}
