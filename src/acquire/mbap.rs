//! Modbus TCP reads (function codes 1–4) and writes (5, 6, 15, 16) framed in a buffer the size
//! of one Modbus frame.
//!
//! tokio-modbus frames through `tokio_util::codec::Framed`, which allocates an 8 KiB read
//! buffer and an 8 KiB write buffer per connection with no way to size them. A gateway polling
//! 200 meters, one connection each, held 3.3 MiB in those buffers: a fifth of the daemon's
//! memory budget (docs/design.md §8) for frames that never exceed 260 bytes. TCP links use this
//! instead, for the reads that make most of the traffic and the rare writes alike, so one
//! connection carries both; serial and RTU-over-TCP links keep tokio-modbus. It also checks the transaction id of every answer, which tokio-modbus
//! leaves to a timeout (tokio-modbus #324).

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use super::link::{ModbusWrite, ReadResult, WriteResult};
use super::spec::Function;

/// MBAP header plus the largest PDU (Modbus Application Protocol v1.1b3 §4.1).
const MAX_ADU: usize = 260;
/// Transaction id, protocol id, length, unit id.
const HEADER: usize = 7;

/// A Modbus TCP client for reads, over any byte stream (a `TcpStream` in the daemon).
#[derive(Debug)]
pub(crate) struct TcpReader<S> {
    stream: S,
    transaction: u16,
    frame: [u8; MAX_ADU],
}

impl<S: AsyncRead + AsyncWrite + Unpin> TcpReader<S> {
    /// A client on an open stream.
    pub(crate) fn new(stream: S) -> Self {
        Self {
            stream,
            transaction: 0,
            frame: [0; MAX_ADU],
        }
    }

    /// One read transaction. `Err` is a transport or framing failure, after which the stream is
    /// out of step and must be dropped; an exception answer is `Ok(ReadResult::Exception)`.
    pub(crate) async fn read(
        &mut self,
        unit: u8,
        function: Function,
        address: u16,
        count: u16,
    ) -> io::Result<ReadResult> {
        self.transaction = self.transaction.wrapping_add(1);
        let [t0, t1] = self.transaction.to_be_bytes();
        let [a0, a1] = address.to_be_bytes();
        let [c0, c1] = count.to_be_bytes();
        let code = function.code();
        let request = [t0, t1, 0, 0, 0, 6, unit, code, a0, a1, c0, c1];
        self.stream.write_all(&request).await?;
        let pdu = self.answer(unit).await?;
        parse(pdu, code, function.is_bits(), count)
    }

    /// One write transaction. `Err` is a transport or framing failure, as for [`Self::read`];
    /// an exception answer is `Ok(WriteResult::Exception)`.
    pub(crate) async fn write(&mut self, unit: u8, write: &ModbusWrite) -> io::Result<WriteResult> {
        self.transaction = self.transaction.wrapping_add(1);
        let pdu = write.pdu();
        let length = u16::try_from(pdu.len() + 1)
            .ok()
            .filter(|l| usize::from(*l) < MAX_ADU - HEADER + 1)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("a write of {} bytes exceeds one Modbus frame", pdu.len()),
                )
            })?;
        let mut request = Vec::with_capacity(HEADER + pdu.len());
        request.extend_from_slice(&self.transaction.to_be_bytes());
        request.extend_from_slice(&[0, 0]);
        request.extend_from_slice(&length.to_be_bytes());
        request.push(unit);
        request.extend_from_slice(&pdu);
        self.stream.write_all(&request).await?;
        let answer = self.answer(unit).await?;
        match answer {
            [c, exception] if *c == pdu[0] | 0x80 => Ok(WriteResult::Exception(*exception)),
            // 05 and 06 echo the request; 15 and 16 answer its address and quantity: either
            // way, the request's first five bytes.
            echo if echo == &pdu[..5] => Ok(WriteResult::Done),
            other => Err(malformed(format!(
                "write answer {other:02x?}, expected {:02x?}",
                &pdu[..5]
            ))),
        }
    }

    /// Reads one whole answer frame and returns its PDU.
    async fn answer(&mut self, unit: u8) -> io::Result<&[u8]> {
        let mut filled = 0;
        let mut frame_len = None;
        // Reads as much as has arrived: the whole answer usually comes in one segment, so one
        // read call rather than one for the header and one for the rest.
        loop {
            let n = self.stream.read(&mut self.frame[filled..]).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("connection closed after {filled} bytes of an answer"),
                ));
            }
            filled += n;
            if frame_len.is_none() && filled >= HEADER {
                frame_len = Some(self.header(unit)?);
            }
            match frame_len {
                Some(len) if filled == len => return Ok(&self.frame[HEADER..len]),
                // One transaction is outstanding, so nothing may follow its answer.
                Some(len) if filled > len => {
                    return Err(malformed(format!(
                        "{} bytes after a {len}-byte frame",
                        filled - len
                    )));
                }
                _ => {}
            }
        }
    }

    /// Checks the MBAP header; returns the frame's whole length.
    fn header(&self, unit: u8) -> io::Result<usize> {
        let f = &self.frame;
        let transaction = u16::from_be_bytes([f[0], f[1]]);
        let protocol = u16::from_be_bytes([f[2], f[3]]);
        let length = usize::from(u16::from_be_bytes([f[4], f[5]]));
        if transaction != self.transaction {
            return Err(malformed(format!(
                "answer to transaction {transaction}, expected {}",
                self.transaction
            )));
        }
        if protocol != 0 {
            return Err(malformed(format!("protocol id {protocol}, expected 0")));
        }
        // The length counts the unit id and the PDU; a PDU holds at least a function code
        // and one byte.
        if !(3..=MAX_ADU - HEADER + 1).contains(&length) {
            return Err(malformed(format!("frame length {length} out of 3..=254")));
        }
        if f[6] != unit {
            return Err(malformed(format!(
                "answer from unit {}, expected {unit}",
                f[6]
            )));
        }
        Ok(HEADER + length - 1)
    }
}

/// Decodes a read answer's PDU.
fn parse(pdu: &[u8], code: u8, bits: bool, count: u16) -> io::Result<ReadResult> {
    match pdu {
        [c, exception] if *c == code | 0x80 => Ok(ReadResult::Exception(*exception)),
        [c, ..] if *c != code => Err(malformed(format!(
            "function code {c} in the answer, expected {code}"
        ))),
        [_, byte_count, data @ ..] => {
            let expected = if bits {
                usize::from(count).div_ceil(8)
            } else {
                usize::from(count) * 2
            };
            if usize::from(*byte_count) != data.len() || data.len() != expected {
                return Err(malformed(format!(
                    "{} data bytes (byte count {byte_count}) for {count} {}, expected {expected}",
                    data.len(),
                    if bits { "bits" } else { "registers" }
                )));
            }
            Ok(if bits {
                ReadResult::Bits(
                    (0..usize::from(count))
                        .map(|i| data[i / 8] & (1 << (i % 8)) != 0)
                        .collect(),
                )
            } else {
                ReadResult::Words(
                    data.chunks_exact(2)
                        .map(|w| u16::from_be_bytes([w[0], w[1]]))
                        .collect(),
                )
            })
        }
        _ => Err(malformed(format!("answer PDU of {} bytes", pdu.len()))),
    }
}

fn malformed(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed answer: {what}"),
    )
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "a test spawns the peer or server it talks to"
)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;

    /// A client and the device's end of its stream.
    fn pair() -> (TcpReader<DuplexStream>, DuplexStream) {
        let (client, device) = tokio::io::duplex(1024);
        (TcpReader::new(client), device)
    }

    /// Reads the 12-byte request at the device's end.
    async fn request(device: &mut DuplexStream) -> [u8; 12] {
        let mut req = [0; 12];
        device.read_exact(&mut req).await.unwrap();
        req
    }

    #[tokio::test]
    async fn reads_registers_answered_in_pieces() {
        let (mut reader, mut device) = pair();
        let server = tokio::spawn(async move {
            let req = request(&mut device).await;
            // Transaction 1, unit 7, holding registers from 0x2000, count 2.
            assert_eq!(req, [0, 1, 0, 0, 0, 6, 7, 3, 0x20, 0, 0, 2]);
            // Split inside the header and inside the data: TCP may deliver it so.
            device.write_all(&[0, 1, 0, 0]).await.unwrap();
            device.flush().await.unwrap();
            tokio::task::yield_now().await;
            device.write_all(&[0, 7, 7, 3, 4, 0x12]).await.unwrap();
            tokio::task::yield_now().await;
            device.write_all(&[0x34, 0xAB, 0xCD]).await.unwrap();
            device
        });
        let got = reader.read(7, Function::Holding, 0x2000, 2).await.unwrap();
        assert!(
            matches!(got, ReadResult::Words(ref w) if w == &[0x1234, 0xABCD]),
            "{got:?}"
        );
        drop(server.await.unwrap());
    }

    #[tokio::test]
    async fn reads_bits_lsb_first() {
        let (mut reader, mut device) = pair();
        let server = tokio::spawn(async move {
            request(&mut device).await;
            device
                .write_all(&[0, 1, 0, 0, 0, 5, 1, 1, 2, 0b1000_0101, 0b1])
                .await
                .unwrap();
            device
        });
        let got = reader.read(1, Function::Coil, 0, 9).await.unwrap();
        let ReadResult::Bits(bits) = got else {
            unreachable!("{got:?}")
        };
        assert_eq!(
            bits,
            [true, false, true, false, false, false, false, true, true]
        );
        drop(server.await.unwrap());
    }

    #[tokio::test]
    async fn an_exception_is_the_devices_answer_not_a_failure() {
        let (mut reader, mut device) = pair();
        let server = tokio::spawn(async move {
            request(&mut device).await;
            device
                .write_all(&[0, 1, 0, 0, 0, 3, 1, 0x84, 2])
                .await
                .unwrap();
            device
        });
        let got = reader.read(1, Function::Input, 9, 1).await.unwrap();
        assert!(matches!(got, ReadResult::Exception(2)), "{got:?}");
        drop(server.await.unwrap());
    }

    /// Each answer is wrong in one way; the error says which.
    #[tokio::test]
    async fn garbage_answers_are_named() {
        let cases: [(&[u8], &str); 8] = [
            (
                &[0, 9, 0, 0, 0, 5, 1, 3, 2, 0, 1],
                "answer to transaction 9, expected 1",
            ),
            (&[0, 1, 0, 1, 0, 5, 1, 3, 2, 0, 1], "protocol id 1"),
            (&[0, 1, 0, 0, 0x10, 0, 1], "frame length 4096"),
            (
                &[0, 1, 0, 0, 0, 5, 2, 3, 2, 0, 1],
                "answer from unit 2, expected 1",
            ),
            (
                &[0, 1, 0, 0, 0, 5, 1, 4, 2, 0, 1],
                "function code 4 in the answer, expected 3",
            ),
            (
                &[0, 1, 0, 0, 0, 5, 1, 3, 4, 0, 1],
                "2 data bytes (byte count 4)",
            ),
            (
                &[0, 1, 0, 0, 0, 7, 1, 3, 4, 0, 1, 0, 2],
                "4 data bytes (byte count 4) for 1 registers, expected 2",
            ),
            (
                &[0, 1, 0, 0, 0, 5, 1, 3, 2, 0, 1, 9],
                "1 bytes after a 11-byte frame",
            ),
        ];
        for (answer, expected) in cases {
            let (mut reader, mut device) = pair();
            let server = tokio::spawn(async move {
                request(&mut device).await;
                device.write_all(answer).await.unwrap();
                device
            });
            let err = reader
                .read(1, Function::Holding, 0, 1)
                .await
                .expect_err(expected);
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{answer:?}");
            assert!(err.to_string().contains(expected), "{answer:?}: {err}");
            drop(server.await.unwrap());
        }
    }

    #[tokio::test]
    async fn a_connection_closed_mid_answer_is_an_error() {
        let (mut reader, mut device) = pair();
        let server = tokio::spawn(async move {
            request(&mut device).await;
            device.write_all(&[0, 1, 0, 0, 0, 5, 1, 3]).await.unwrap();
        });
        let err = reader
            .read(1, Function::Holding, 0, 1)
            .await
            .expect_err("closed mid-frame");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(err.to_string().contains("after 8 bytes"), "{err}");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn writes_frame_each_function_and_accept_its_echo() {
        use crate::acquire::link::{ModbusWrite, WriteData};
        use crate::acquire::write::WriteFunction;
        let cases: [(ModbusWrite, &[u8], &[u8]); 4] = [
            (
                ModbusWrite {
                    function: WriteFunction::SingleCoil,
                    address: 0x13,
                    data: WriteData::Bits(vec![true]),
                },
                &[0, 6, 9, 5, 0, 0x13, 0xFF, 0],
                &[0, 6, 9, 5, 0, 0x13, 0xFF, 0],
            ),
            (
                ModbusWrite {
                    function: WriteFunction::SingleRegister,
                    address: 1,
                    data: WriteData::Words(vec![0x1234]),
                },
                &[0, 6, 9, 6, 0, 1, 0x12, 0x34],
                &[0, 6, 9, 6, 0, 1, 0x12, 0x34],
            ),
            (
                ModbusWrite {
                    function: WriteFunction::MultipleCoils,
                    address: 0x13,
                    data: WriteData::Bits(vec![
                        true, false, true, true, false, false, true, true, true, false,
                    ]),
                },
                &[0, 9, 9, 15, 0, 0x13, 0, 10, 2, 0xCD, 0x01],
                &[0, 6, 9, 15, 0, 0x13, 0, 10],
            ),
            (
                ModbusWrite {
                    function: WriteFunction::MultipleRegisters,
                    address: 2,
                    data: WriteData::Words(vec![0x000A, 0x0102]),
                },
                &[0, 11, 9, 16, 0, 2, 0, 2, 4, 0, 0x0A, 1, 2],
                &[0, 6, 9, 16, 0, 2, 0, 2],
            ),
        ];
        for (write, request_tail, answer_tail) in cases {
            let (mut client, mut device) = pair();
            let expected_request = request_tail.to_vec();
            let answer = answer_tail.to_vec();
            let server = tokio::spawn(async move {
                let mut req = vec![0; 4 + expected_request.len()];
                device.read_exact(&mut req).await.unwrap();
                assert_eq!(req[..4], [0, 1, 0, 0]);
                assert_eq!(req[4..], expected_request[..]);
                let mut frame = vec![0, 1, 0, 0];
                frame.extend_from_slice(&answer);
                device.write_all(&frame).await.unwrap();
                device
            });
            let got = client.write(9, &write).await.unwrap();
            assert_eq!(got, WriteResult::Done, "{write:?}");
            drop(server.await.unwrap());
        }
    }

    #[tokio::test]
    async fn a_write_exception_is_an_answer_and_a_wrong_echo_is_malformed() {
        use crate::acquire::link::{ModbusWrite, WriteData};
        use crate::acquire::write::WriteFunction;
        let write = ModbusWrite {
            function: WriteFunction::SingleRegister,
            address: 1,
            data: WriteData::Words(vec![7]),
        };
        for (answer, expected) in [
            (
                &[0u8, 1, 0, 0, 0, 3, 1, 0x86, 3][..],
                Ok(WriteResult::Exception(3)),
            ),
            (
                &[0, 1, 0, 0, 0, 6, 1, 6, 0, 1, 0, 8][..],
                Err("write answer"),
            ),
        ] {
            let (mut client, mut device) = pair();
            let server = tokio::spawn(async move {
                request(&mut device).await;
                device.write_all(answer).await.unwrap();
                device
            });
            let got = client.write(1, &write).await;
            match (got, expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want),
                (Err(err), Err(fragment)) => {
                    assert!(err.to_string().contains(fragment), "{err}");
                }
                (got, want) => panic!("{got:?}, expected {want:?}"),
            }
            drop(server.await.unwrap());
        }
    }

    #[tokio::test]
    async fn transaction_ids_advance_per_request() {
        let (mut reader, mut device) = pair();
        let server = tokio::spawn(async move {
            for t in 1..=3u8 {
                let req = request(&mut device).await;
                assert_eq!(req[..2], [0, t]);
                device
                    .write_all(&[0, t, 0, 0, 0, 5, 1, 3, 2, 0, t])
                    .await
                    .unwrap();
            }
            device
        });
        for t in 1..=3u16 {
            let got = reader.read(1, Function::Holding, 0, 1).await.unwrap();
            assert!(
                matches!(got, ReadResult::Words(ref w) if w == &[t]),
                "{got:?}"
            );
        }
        drop(server.await.unwrap());
    }
}
