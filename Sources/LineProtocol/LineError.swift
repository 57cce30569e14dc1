/// Why a line was rejected, and where.
///
/// Errors are values without allocation on the decode path; ``message`` builds the human-readable text
/// (`column 18: expected '=' after tag key, found ' '`) only when someone asks for it.
public struct LineError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What went wrong.
    public enum Kind: Sendable, Hashable {
        case missingMeasurement
        case missingFields
        case missingTagKey
        case missingTagValue
        case unescapedEqualsInTagValue
        case duplicateTag
        case missingFieldKey
        case missingFieldEquals
        /// A field key ending in an escaped backslash (`a\\=1`), which InfluxDB reads two ways.
        case escapedBackslashBeforeEquals
        case missingFieldValue
        case invalidNumber
        case integerOutOfRange
        case unsignedOutOfRange
        case floatOutOfRange
        case invalidBoolean
        case unterminatedString
        case expectedFieldSeparator
        case invalidTimestamp
        case timestampOutOfRange
        case trailingCharacters
        case keyTooLong
    }

    /// The kind of failure.
    public var kind: Kind
    /// 1-based byte column in the line where the problem was found.
    public var column: Int
    /// The byte found at `column`, or `nil` at the end of the line.
    public var found: UInt8?

    public init(_ kind: Kind, column: Int, found: UInt8?) {
        self.kind = kind
        self.column = column
        self.found = found
    }

    /// What the decoder expected at ``column``.
    public var expected: String {
        switch kind {
        case .missingMeasurement: "a measurement name"
        case .missingFields: "a field set after the measurement and tags (e.g. ' value=1')"
        case .missingTagKey: "a tag key after ','"
        case .missingTagValue: "'=' and a non-empty tag value after the tag key"
        case .unescapedEqualsInTagValue: "',' or ' ' (an '=' in a tag value must be escaped as '\\=')"
        case .duplicateTag: "each tag key at most once"
        case .missingFieldKey: "a field key"
        case .missingFieldEquals: "'=' and a value after the field key"
        case .escapedBackslashBeforeEquals:
            "a field key that does not end in an escaped backslash (InfluxDB reads '\\\\=' two ways; rename the field)"
        case .missingFieldValue: "a field value after '='"
        case .invalidNumber:
            "a number: float (1.5, -2e3), integer (42i) or unsigned (42u); NaN and Inf are not supported"
        case .integerOutOfRange: "an integer in -9223372036854775808...9223372036854775807"
        case .unsignedOutOfRange: "an unsigned integer in 0...18446744073709551615"
        case .floatOutOfRange: "a finite float64"
        case .invalidBoolean: "a boolean (t, T, true, True, TRUE, f, F, false, False, FALSE)"
        case .unterminatedString: "a closing '\"' for the string field value"
        case .expectedFieldSeparator: "',' or ' ' after the field value"
        case .invalidTimestamp: "an integer timestamp"
        case .timestampOutOfRange:
            "a timestamp between 1677-09-21T00:12:43.145224194Z and 2262-04-11T23:47:16.854775806Z"
        case .trailingCharacters: "the end of the line after the timestamp"
        case .keyTooLong: "a series key (measurement, tags and field key) of at most 65535 bytes"
        }
    }

    /// `column N: expected X, found Y`.
    public var message: String {
        let what: String
        if let found {
            what = "found \(LineError.describe(found))"
        } else {
            what = "found end of line"
        }
        return "column \(column): expected \(expected), \(what)"
    }

    public var description: String { message }

    /// How a byte is shown in a message (`'x'`, `' '`, `byte 0xFF`).
    public static func describe(_ byte: UInt8) -> String {
        switch byte {
        case 0x20: return "' '"
        case 0x09: return "'\\t'"
        case 0x0D: return "'\\r'"
        case 0x00: return "NUL"
        case 0x27: return "\"'\""
        case 0x21...0x7E: return "'\(Character(UnicodeScalar(byte)))'"
        default:
            let hex = String(byte, radix: 16, uppercase: true)
            return "byte 0x\(hex.count == 1 ? "0" + hex : hex)"
        }
    }
}
