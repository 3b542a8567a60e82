import Foundation
import Storage

/// Every event of a TensorBoard event file, after checking each record's CRCs.
public func tensorBoardEvents(in url: URL) throws -> [TensorBoardEvent] {
    try TFRecord.records(in: readFile(url), file: url.path).map { try TensorBoardEvent(decoding: $0, file: url.path) }
}
