//! Writing frames to sockets: the one piece of Quipu's wire handling that does I/O, kept out of
//! `quipu-protocol` so the protocol crate stays free of any runtime. The broker's connections and
//! the client's share it.
//!
//! Invariant: a chunk's bytes are written from where they are (a mapped segment, a producer's
//! batch), never copied into a staging buffer.

/// Writes every chunk of a frame with vectored writes, up to 64 slices a system call, so record
/// bytes go out from where they are (a mapped segment, a producer's batch) without a copy.
/// The chunks are advanced past what was written; empty chunks are skipped.
pub async fn write_chunks<W: tokio::io::AsyncWrite + Unpin>(
    writer: &mut W,
    chunks: &mut [bytes::Bytes],
) -> std::io::Result<()> {
    use bytes::Buf;
    use tokio::io::AsyncWriteExt;
    const MAX_SLICES: usize = 64;
    let mut first = 0;
    loop {
        while first < chunks.len() && chunks[first].is_empty() {
            first += 1;
        }
        if first == chunks.len() {
            return Ok(());
        }
        let slices: Vec<std::io::IoSlice<'_>> = chunks[first..]
            .iter()
            .take(MAX_SLICES)
            .map(|c| std::io::IoSlice::new(c))
            .collect();
        let mut written = writer.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let advanced = written.min(chunks[first].len());
            chunks[first].advance(advanced);
            written -= advanced;
            if chunks[first].is_empty() {
                first += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn chunks_are_written_whole_and_empty_ones_skipped() {
        let mut out: Vec<u8> = Vec::new();
        let mut chunks = vec![
            bytes::Bytes::from_static(b"ab"),
            bytes::Bytes::new(),
            bytes::Bytes::from_static(b"cd"),
            bytes::Bytes::new(),
        ];
        super::write_chunks(&mut out, &mut chunks).await.unwrap();
        assert_eq!(out, b"abcd");
        assert!(chunks.iter().all(|c| c.is_empty()));
        // A writer that takes a few bytes at a time: chunks split across writes.
        let (mut tx, mut rx) = tokio::io::duplex(3);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut rx, &mut got)
                .await
                .unwrap();
            got
        });
        let mut chunks: Vec<bytes::Bytes> =
            (0..100u8).map(|i| bytes::Bytes::from(vec![i; 7])).collect();
        super::write_chunks(&mut tx, &mut chunks).await.unwrap();
        drop(tx);
        let expected: Vec<u8> = (0..100u8).flat_map(|i| vec![i; 7]).collect();
        assert_eq!(reader.await.unwrap(), expected);
    }
}
