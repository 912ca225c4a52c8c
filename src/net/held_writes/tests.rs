use std::future::poll_fn;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::test_support::CountingWaker;

const DEADLINE: Duration = Duration::from_secs(10);

async fn pair() -> (HeldWrites<TcpStream>, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (HeldWrites::new(client.unwrap()), server.unwrap().0)
}

/// What the peer has been sent so far, without waiting.
fn received_now(peer: &TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 64 << 10];
    loop {
        match peer.try_read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return out,
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Reads exactly `len` bytes, within the deadline.
async fn receive(peer: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    tokio::time::timeout(DEADLINE, peer.read_exact(&mut out))
        .await
        .expect("the bytes arrive in time")
        .unwrap();
    out
}

#[tokio::test]
async fn short_writes_wait_for_the_end_of_the_round_and_leave_in_one_piece() {
    let (mut held, mut peer) = pair().await;
    held.write_all(b"first ").await.unwrap();
    held.write_all(b"second").await.unwrap();
    // Flushing is put off once: nothing has left yet.
    let (waker, waker_ref) = CountingWaker::pair();
    let mut cx = Context::from_waker(&waker_ref);
    assert!(Pin::new(&mut held).poll_flush(&mut cx).is_pending());
    assert_eq!(received_now(&peer), b"");
    assert_eq!(
        waker.0.load(Ordering::SeqCst),
        0,
        "woken only after the round"
    );
    // This task's own yield ends the round; the deferred wake-up comes with it.
    tokio::task::yield_now().await;
    assert_eq!(waker.0.load(Ordering::SeqCst), 1);
    held.flush().await.unwrap();
    assert_eq!(receive(&mut peer, 12).await, b"first second");
}

/// Tasks of one worker that each write and flush: no write leaves before every task of the
/// round has run; then they all leave. Without the hold each task's write would leave in its
/// own turn.
#[tokio::test]
async fn the_writes_of_a_round_leave_after_every_task_of_the_round_has_run() {
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut pairs = Vec::new();
    for _ in 0..4 {
        pairs.push(pair().await);
    }
    // Spawned without a pause in between, all four are ready in the same round.
    let mut tasks = Vec::new();
    for (i, (mut held, peer)) in pairs.into_iter().enumerate() {
        let events = Arc::clone(&events);
        tasks.push(tokio::spawn(async move {
            events.lock().unwrap().push(format!("ran {i}"));
            held.write_all(b"answer").await.unwrap();
            held.flush().await.unwrap();
            let sent = !received_now(&peer).is_empty() || {
                let mut peer = peer;
                receive(&mut peer, 6).await == b"answer"
            };
            events.lock().unwrap().push(format!("sent {i}: {sent}"));
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut events = events.lock().unwrap().clone();
    // The order the held writes leave in among themselves is the scheduler's.
    events[4..].sort();
    assert_eq!(
        events,
        [
            "ran 0",
            "ran 1",
            "ran 2",
            "ran 3",
            "sent 0: true",
            "sent 1: true",
            "sent 2: true",
            "sent 3: true"
        ]
    );
}

#[tokio::test]
async fn a_write_just_under_the_limit_is_held_and_one_at_or_over_it_is_not() {
    for (len, held_back) in [
        (HOLD_BELOW - 1, true),
        (HOLD_BELOW, false),
        (HOLD_BELOW + 1, false),
    ] {
        let (mut held, mut peer) = pair().await;
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let n = poll_fn(|cx| Pin::new(&mut held).poll_write(cx, &bytes))
            .await
            .unwrap();
        if held_back {
            assert_eq!(n, len);
            assert_eq!(received_now(&peer), b"", "{len} bytes are held");
            held.flush().await.unwrap();
        }
        held.write_all(&bytes[n..]).await.unwrap();
        assert_eq!(receive(&mut peer, len).await, bytes, "{len} bytes");
    }
}

#[tokio::test]
async fn what_is_held_leaves_before_a_long_write() {
    let (mut held, mut peer) = pair().await;
    held.write_all(b"head").await.unwrap();
    let long = vec![7u8; HOLD_BELOW];
    held.write_all(&long).await.unwrap();
    // Both left without a flush, in order.
    let got = receive(&mut peer, 4 + long.len()).await;
    assert_eq!(&got[..4], b"head");
    assert!(got[4..].iter().all(|b| *b == 7));
}

#[tokio::test]
async fn held_writes_that_would_reach_the_limit_send_what_is_held_first() {
    let (mut held, mut peer) = pair().await;
    let first = vec![1u8; HOLD_BELOW / 2];
    let second = vec![2u8; HOLD_BELOW / 2];
    held.write_all(&first).await.unwrap();
    assert_eq!(received_now(&peer), b"");
    held.write_all(&second).await.unwrap();
    // The first half left to make room; the second is held until a flush.
    assert_eq!(receive(&mut peer, first.len()).await, first);
    assert_eq!(received_now(&peer), b"");
    held.flush().await.unwrap();
    assert_eq!(receive(&mut peer, second.len()).await, second);
}

#[tokio::test]
async fn shutting_down_sends_what_is_held_then_ends_the_stream() {
    let (mut held, mut peer) = pair().await;
    held.write_all(b"last words").await.unwrap();
    held.shutdown().await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(DEADLINE, peer.read_to_end(&mut got))
        .await
        .expect("the stream ends in time")
        .unwrap();
    assert_eq!(got, b"last words");
}

/// Writes of random lengths (short, just under, at and over the limit, long), flushed at random,
/// against a peer that reads only when the writer waits, so the socket fills: the peer gets every
/// byte, in order.
#[tokio::test]
async fn every_byte_arrives_in_order_whatever_the_write_lengths() {
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..8 {
        let (mut held, mut peer) = pair().await;
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            tokio::time::timeout(DEADLINE, peer.read_to_end(&mut got))
                .await
                .expect("the peer reads everything in time")
                .unwrap();
            got
        });
        let mut sent = Vec::new();
        for _ in 0..200 {
            let len = match next() % 4 {
                0 => (next() % 64) as usize,
                1 => (next() % HOLD_BELOW as u64) as usize,
                2 => HOLD_BELOW - 1 + (next() % 3) as usize,
                _ => HOLD_BELOW + (next() % (3 * HOLD_BELOW as u64)) as usize,
            };
            let start = sent.len();
            sent.extend((start..start + len).map(|i| (i % 253) as u8));
            held.write_all(&sent[start..]).await.unwrap();
            if next() % 3 == 0 {
                held.flush().await.unwrap();
            }
        }
        held.shutdown().await.unwrap();
        drop(held);
        let got = reader.await.unwrap();
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "the bytes arrived out of order");
    }
}

#[tokio::test]
async fn a_hold_buffer_past_the_cap_is_given_back_once_written_and_a_small_one_is_kept() {
    for (len, kept) in [
        (KEEP_AT_MOST - 1, true),
        (KEEP_AT_MOST, true),
        (KEEP_AT_MOST + 1, false),
    ] {
        let (mut held, mut peer) = pair().await;
        held.write_all(&vec![3u8; len]).await.unwrap();
        // Held in a buffer of exactly its length, so the cap is what is tested.
        assert_eq!(held.held.capacity(), len);
        held.flush().await.unwrap();
        assert_eq!(receive(&mut peer, len).await, vec![3u8; len]);
        let expected = if kept { len } else { 0 };
        assert_eq!(held.held.capacity(), expected, "{len} bytes");
    }
}
