#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 UDP address: `address` in network byte order (as in `in_addr.s_addr`), `port` in host order.
struct HeartbeatEndpoint: Hashable, Sendable, CustomStringConvertible {
    var address: UInt32
    var port: UInt16

    var description: String {
        let bytes = withUnsafeBytes(of: address) { Array($0) }  // network order: first byte first
        return "\(bytes[0]).\(bytes[1]).\(bytes[2]).\(bytes[3]):\(port)"
    }
}

/// The UDP socket of one rank's watchdog: bound to every local address on a port the kernel picks,
/// sending and receiving small datagrams. Errors of sending (a cut cable makes `sendto` fail with
/// ENETUNREACH) are ignored: silence is what the watchdog measures, not send errors. Used by one
/// thread only (the watchdog's), hence no locking.
final class HeartbeatSocket {
    let descriptor: Int32
    let port: UInt16

    init() throws {
        let descriptor = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { throw HeartbeatSocket.error("socket(AF_INET, SOCK_DGRAM)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = INADDR_ANY
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else {
            let failure = HeartbeatSocket.error("bind(0.0.0.0:0)")
            close(descriptor)
            throw failure
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        guard named == 0 else {
            let failure = HeartbeatSocket.error("getsockname")
            close(descriptor)
            throw failure
        }
        self.descriptor = descriptor
        port = UInt16(bigEndian: address.sin_port)
    }

    deinit {
        close(descriptor)
    }

    func send(_ bytes: UnsafeRawBufferPointer, to endpoint: HeartbeatEndpoint) {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = endpoint.address
        address.sin_port = endpoint.port.bigEndian
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(descriptor, bytes.baseAddress, bytes.count, Int32(MSG_DONTWAIT), $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
    }

    /// Waits up to `timeoutSeconds` for one datagram; returns its length (truncated to the buffer),
    /// or nil when none arrived in time.
    func receive(into buffer: UnsafeMutableRawBufferPointer, timeoutSeconds: Double) -> Int? {
        var request = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        let milliseconds = Int32(max(0, min(timeoutSeconds * 1000, 60_000)).rounded(.up))
        guard poll(&request, 1, milliseconds) > 0, request.revents & Int16(POLLIN) != 0 else { return nil }
        let count = recv(descriptor, buffer.baseAddress, buffer.count, Int32(MSG_DONTWAIT))
        return count >= 0 ? count : nil
    }

    /// The IPv4 addresses (network byte order) of the interfaces that are up: those named in
    /// `interfaces` (names such as eth1, or subnets such as 10.0.0.0/16, as Open MPI's
    /// btl_tcp_if_include takes them), or when it is empty every interface but loopback; loopback
    /// only when nothing else exists (a machine without network: all ranks are local).
    static func localAddresses(interfaces: [String]) throws -> [UInt32] {
        let subnets = interfaces.compactMap(Subnet.init)
        var list: UnsafeMutablePointer<ifaddrs>? = nil
        guard getifaddrs(&list) == 0 else { throw error("getifaddrs") }
        defer { freeifaddrs(list) }
        var chosen: [UInt32] = [], loopback: [UInt32] = []
        var entry = list
        while let current = entry {
            defer { entry = current.pointee.ifa_next }
            guard let socketAddress = current.pointee.ifa_addr, Int32(socketAddress.pointee.sa_family) == AF_INET,
                  current.pointee.ifa_flags & UInt32(IFF_UP) != 0 else { continue }
            let name = String(cString: current.pointee.ifa_name)
            let address = socketAddress.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr.s_addr }
            let isLoopback = current.pointee.ifa_flags & UInt32(IFF_LOOPBACK) != 0
            if interfaces.isEmpty {
                if isLoopback { loopback.append(address) } else { chosen.append(address) }
            } else if interfaces.contains(name) || subnets.contains(where: { $0.contains(address) }) {
                chosen.append(address)
            }
        }
        if !interfaces.isEmpty && chosen.isEmpty {
            throw CommunicationError(rank: 0, operation: "PeerWatchdog",
                                     reason: "no interface named \(interfaces.joined(separator: " or ")) with an IPv4 address is up on this host")
        }
        return chosen.isEmpty ? loopback : chosen
    }

    /// An IPv4 subnet written a.b.c.d/n.
    struct Subnet {
        var network: UInt32  // host byte order
        var mask: UInt32

        init?(_ text: String) {
            let parts = text.split(separator: "/")
            let octets = parts.first?.split(separator: ".").compactMap { UInt32($0) } ?? []
            guard parts.count == 2, let bits = UInt32(parts[1]), bits <= 32, octets.count == 4, octets.allSatisfy({ $0 < 256 })
            else { return nil }
            mask = bits == 0 ? 0 : ~UInt32(0) << (32 - bits)
            network = (octets[0] << 24 | octets[1] << 16 | octets[2] << 8 | octets[3]) & mask
        }

        /// `address` in network byte order.
        func contains(_ address: UInt32) -> Bool {
            UInt32(bigEndian: address) & mask == network
        }
    }

    private static func error(_ call: String) -> CommunicationError {
        CommunicationError(rank: 0, operation: "PeerWatchdog: \(call)", reason: String(cString: strerror(errno)))
    }
}

/// The datagrams between watchdogs. Layout (little-endian): magic "BDWD" (4 bytes), kind (1),
/// unused (3), job token (8), sender rank (4), then for `end` the reporter's line (UTF-8).
/// The job token (rank 0's random number, shared at start) keeps datagrams of another job that
/// happens to reuse a port from counting.
enum HeartbeatPacket {
    enum Kind: UInt8 {
        /// "I am alive."
        case heartbeat = 1
        /// "I am stopping normally: stop expecting me."
        case goodbye = 2
        /// "I have reported the silence and end the job: end too, quietly." Carries the line.
        case end = 3
        /// Sent by a watchdog to itself, to wake its thread for `stop()`.
        case wake = 4
        /// "I have reported the silence and save a checkpoint before I end: keep waiting for my `end`."
        case hold = 5
    }

    static let magic: UInt32 = 0x4244_5744
    static let headerSize = 20
    static let capacity = 1024

    /// Writes a packet into `buffer` (at least `capacity` bytes) and returns its length.
    static func encode(_ kind: Kind, token: UInt64, rank: Int, text: String = "", into buffer: UnsafeMutableRawBufferPointer) -> Int {
        buffer.storeBytes(of: magic.littleEndian, toByteOffset: 0, as: UInt32.self)
        buffer.storeBytes(of: UInt32(kind.rawValue).littleEndian, toByteOffset: 4, as: UInt32.self)
        buffer.storeBytes(of: token.littleEndian, toByteOffset: 8, as: UInt64.self)
        buffer.storeBytes(of: UInt32(truncatingIfNeeded: rank).littleEndian, toByteOffset: 16, as: UInt32.self)
        var length = headerSize
        for byte in text.utf8.prefix(capacity - headerSize) {
            buffer[length] = byte
            length += 1
        }
        return length
    }

    /// The kind, sender and text of a packet of this job, or nil for anything else.
    static func decode(_ bytes: UnsafeRawBufferPointer, token: UInt64) -> (kind: Kind, rank: Int, text: String)? {
        guard bytes.count >= headerSize,
              UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt32.self)) == magic,
              UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self)) == token,
              let kind = Kind(rawValue: UInt8(truncatingIfNeeded: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 4, as: UInt32.self))))
        else { return nil }
        let rank = Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 16, as: UInt32.self)))
        let text = kind == .end ? String(decoding: bytes[headerSize...], as: UTF8.self) : ""
        return (kind, rank, text)
    }
}
