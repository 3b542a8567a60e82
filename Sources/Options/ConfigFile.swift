import ArgumentParser
import Data
import Foundation
import Model

// Options as a JSON object keyed by long option names, both ways:
// - `--config FILE` (train): the file's options become command-line arguments placed before the
//   command line's own, so the command line overrides them (the last value of an option wins)
//   and they are parsed, checked and defaulted exactly as typed ones;
// - training_args.json: every option of a parsed command with its resolved value.
// Both read the option names from the parser's own description of the command
// (`_dumpHelp()`), so an option is declared once, with its help, and is known here at once.

/// A command that takes `--config FILE`.
public protocol ConfigFileCommand: ParsableCommand {}

extension JSONValue {
    /// An option's value as it is written on a command line (strings and numbers; whole
    /// numbers without a fraction), nil for any other value.
    var argumentText: String? {
        switch self {
        case .string(let text): return text
        case .number: return compact
        default: return nil
        }
    }
}

/// A value an option's transform makes, written back as the text that makes it.
public protocol CommandLineText {
    var commandLineText: String { get }
}

extension LabelSet: CommandLineText {
    public var commandLineText: String { names.joined(separator: ",") }
}

extension ClassWeights: CommandLineText {
    public var commandLineText: String { description }
}

/// The options of a command as the parser describes them: long names, flag or option, in
/// declaration order (option groups flattened in place), as ArgumentParser builds them.
struct OptionCatalogue {
    struct Entry {
        /// Long names; the first is the preferred one (what files use).
        let names: [String]
        let isFlag: Bool
        let isRepeating: Bool
        var name: String { names[0] }
    }
    let entries: [Entry]

    /// Options every command has that hold no value of the command.
    static let builtIn: Set<String> = ["help", "version"]

    init(_ type: ParsableArguments.Type) throws {
        guard let tool = try? JSONSerialization.jsonObject(with: Data(type._dumpHelp().utf8)) as? [String: Any],
              let command = tool["command"] as? [String: Any], let arguments = command["arguments"] as? [[String: Any]] else {
            throw ValidationError("cannot list the options of \(type): ArgumentParser's description of them is not the JSON it documents")
        }
        var entries: [Entry] = []
        for argument in arguments {
            let longNames = (argument["names"] as? [[String: Any]] ?? []).filter { $0["kind"] as? String == "long" }.compactMap { $0["name"] as? String }
            let preferred = (argument["preferredName"] as? [String: Any])?["name"] as? String
            guard let preferred, longNames.contains(preferred), !Self.builtIn.contains(preferred) else { continue }
            let isFlag = argument["kind"] as? String == "flag"
            // A flag with an inversion (`--x` / `--no-x`) is one property described as two flags.
            if isFlag, let last = entries.last, last.isFlag, preferred == "no-\(last.name)" {
                entries[entries.count - 1] = Entry(names: last.names + [preferred], isFlag: true, isRepeating: false)
                continue
            }
            entries.append(Entry(names: [preferred] + longNames.filter { $0 != preferred }, isFlag: isFlag,
                                 isRepeating: argument["isRepeating"] as? Bool ?? false))
        }
        self.entries = entries
    }

    func entry(named name: String) -> Entry? { entries.first { $0.name == name } }
}

// The property wrappers' values, reached without the parser's internals: their public `wrappedValue`.
private protocol RecordedArgument { var recordedValue: Any { get } }
private protocol RecordedGroup { var recordedGroup: Any { get } }
extension Option: RecordedArgument { fileprivate var recordedValue: Any { wrappedValue } }
extension Flag: RecordedArgument { fileprivate var recordedValue: Any { wrappedValue } }
extension Argument: RecordedArgument { fileprivate var recordedValue: Any { wrappedValue } }
extension OptionGroup: RecordedGroup { fileprivate var recordedGroup: Any { wrappedValue } }

public enum ResolvedOptions {
    /// The option a config file is given with; never a key of one (files do not nest).
    public static let configOption = "config"

    /// Every option of `parsed` (a parsed command, or group of options) by its long name, with
    /// its value (null for an optional one not given); `config` itself is left out (its options
    /// are in the others). What training_args.json holds.
    public static func record<Command: ParsableArguments>(_ parsed: Command) throws -> [String: JSONValue] {
        let catalogue = try OptionCatalogue(Command.self)
        var values: [Any] = []
        func collect(_ value: Any) {
            for child in Mirror(reflecting: value).children {
                if let group = child.value as? RecordedGroup { collect(group.recordedGroup) }
                else if let argument = child.value as? RecordedArgument { values.append(argument.recordedValue) }
            }
        }
        collect(parsed)
        guard values.count == catalogue.entries.count else {  // a kind of option this reading does not know
            throw ValidationError("cannot record the options of \(Command.self): \(values.count) values for the \(catalogue.entries.count) options ArgumentParser describes")
        }
        var record: [String: JSONValue] = [:]
        for (entry, value) in zip(catalogue.entries, values) where entry.name != configOption {
            record[entry.name] = optionValue(value)
        }
        return record
    }

    /// An option's value as training_args.json writes it (a Float as its shortest decimal).
    public static func optionValue(_ value: Any) -> JSONValue {
        let mirror = Mirror(reflecting: value)
        if mirror.displayStyle == .optional { return mirror.children.first.map { optionValue($0.value) } ?? .null }
        switch value {
        case let value as Bool: return .bool(value)
        case let value as Int: return .number(Double(value))
        case let value as Double: return .number(value)
        case let value as Float: return .number(Double("\(value)") ?? Double(value))  // 0.1, not 0.10000000149011612
        case let value as String: return .string(value)
        case let value as URL: return .string(value.path)
        case let value as CommandLineText: return .string(value.commandLineText)
        case let value as any RawRepresentable: return .string("\(value.rawValue)")
        case let value as [Any]: return .array(value.map(optionValue))
        default: return .string("\(value)")
        }
    }

    /// `arguments` (without the program name) with the options of the config file of
    /// `--config FILE` (or `--config=FILE`) inserted right after the command's name, when the
    /// command they name is a `ConfigFileCommand`: the command line's own options come after
    /// them and win. A key that is no option, a value of the wrong JSON type, a file that is not
    /// a JSON object: a one-line error naming the file and the key.
    public static func expandingConfigFile(_ arguments: [String], root: ParsableCommand.Type) throws -> [String] {
        guard let (command, commandEnd, path) = try configFile(in: arguments, root: root) else { return arguments }
        let fromFile = try configArguments(file: path, catalogue: try OptionCatalogue(command))
        return Array(arguments[..<commandEnd]) + fromFile + Array(arguments[commandEnd...])
    }

    /// ArgumentParser's `message` about a value it could not read ("The value 'abc' is invalid
    /// for '--lr <lr>'"), prefixed with the config file and key when the file gives that option
    /// that value (the parser reads the file's value even when the command line overrides it);
    /// else `message` as it is.
    public static func namingConfigFile(_ message: String, arguments: [String], root: ParsableCommand.Type) -> String {
        guard let (command, _, path) = try? configFile(in: arguments, root: root),
              let catalogue = try? OptionCatalogue(command), let fromFile = try? configArguments(file: path, catalogue: catalogue) else { return message }
        for argument in fromFile {
            guard let equals = argument.firstIndex(of: "=") else { continue }
            let option = String(argument[..<equals]), value = String(argument[argument.index(after: equals)...])
            if message.contains("'\(value)'") && message.contains("'\(option) ") {
                return "\(path): \(String(option.dropFirst(2)).debugDescription): \(message)"
            }
        }
        return message
    }

    /// The command `arguments` name, where its name ends, and the path of its `--config`; nil
    /// without one (or for a command that takes none).
    private static func configFile(in arguments: [String], root: ParsableCommand.Type) throws
        -> (command: ParsableCommand.Type, commandEnd: Int, path: String)? {
        var command = root, commandEnd = 0
        while commandEnd < arguments.count,
              let subcommand = command.configuration.subcommands.first(where: { $0._commandName == arguments[commandEnd] }) {
            command = subcommand
            commandEnd += 1
        }
        guard command is ConfigFileCommand.Type else { return nil }
        var paths: [String] = []
        var index = commandEnd
        while index < arguments.count && arguments[index] != "--" {
            let argument = arguments[index]
            if argument == "--\(configOption)" {
                guard index + 1 < arguments.count else { throw ValidationError("--\(configOption) needs a file") }
                paths.append(arguments[index + 1])
                index += 1
            } else if argument.hasPrefix("--\(configOption)=") {
                paths.append(String(argument.dropFirst(configOption.count + 3)))
            }
            index += 1
        }
        guard let path = paths.first else { return nil }
        guard paths.count == 1 else { throw ValidationError("--\(configOption) is given \(paths.count) times; give one file") }
        return (command, commandEnd, path)
    }

    /// The command-line arguments a config file stands for (`--name=value` each, so that no
    /// value is taken for an option).
    static func configArguments(file path: String, catalogue: OptionCatalogue) throws -> [String] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ValidationError("--\(configOption) \(path): cannot read the file (\(FileManager.default.fileExists(atPath: path) ? "not readable" : "no such file"))")
        }
        guard let object = (try? JSONValue.parse([UInt8](data), source: path))?.fields else {
            throw ValidationError("\(path): not a JSON object of options (keys: the long option names, e.g. {\"batch-size\": 32, \"lr\": 2e-5})")
        }
        var result: [String] = []
        for key in object.keys.sorted() {
            let value = object[key]!
            // Quoted with escapes: the key may hold line breaks (the message is one line).
            let quoted = String(key.prefix(200)).debugDescription
            if key == configOption { throw ValidationError("\(path): \(quoted): config files do not nest; put the options of that file in this one") }
            let bare = key.hasPrefix("--") ? String(key.dropFirst(2)) : key
            guard let entry = catalogue.entry(named: bare) else {
                // Suggestions only for a key of an option's length (each distance costs the product of the lengths).
                let close = bare.utf8.count > 64 ? [] : catalogue.entries.map(\.name).filter { editDistance($0, bare) <= 2 }.prefix(3)
                throw ValidationError("\(path): unknown option \(quoted)\(close.isEmpty ? "" : " (did you mean \(close.map { "\"\($0)\"" }.joined(separator: ", "))?)"); the keys are the long option names of --help")
            }
            func wrongType(_ expected: String) -> ValidationError {
                ValidationError("\(path): \(quoted) \(expected), found \(value.isObject ? "an object" : String(value.compact.prefix(200)))")
            }
            if entry.isFlag {
                guard case .bool(let on) = value else {
                    if case .null = value { continue }
                    throw wrongType("is a flag: give true or false")
                }
                if on { result.append("--\(entry.name)") }
                else if entry.names.contains("no-\(entry.name)") { result.append("--no-\(entry.name)") }
                continue
            }
            switch value {
            case .null: continue
            case .string, .number: result.append("--\(entry.name)=\(value.argumentText!)")
            case .array(let items):
                let texts = items.compactMap(\.argumentText)
                guard texts.count == items.count else { throw wrongType("takes strings or numbers") }
                if entry.isRepeating {
                    result += texts.map { "--\(entry.name)=\($0)" }
                } else {
                    result.append("--\(entry.name)=\(texts.joined(separator: ","))")  // a list option: --labels A,B
                }
            case .bool: throw wrongType("takes a value, not true or false")
            case .object: throw wrongType("takes a value")
            }
        }
        return result
    }
}

/// Levenshtein distance of two names (for "did you mean").
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a.utf8), b = Array(b.utf8)
    var previous = Array(0...b.count)
    for i in 1...max(a.count, 1) where i <= a.count {
        var current = [i] + [Int](repeating: 0, count: b.count)
        for j in 1...max(b.count, 1) where j <= b.count {
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        previous = current
    }
    return previous[b.count]
}
