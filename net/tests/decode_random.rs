//! Request decoding never panics, hangs or aborts on any bytes: random frames, random
//! bodies behind valid headers, and frames that claim huge array counts.

use bytes::{BufMut, Bytes, BytesMut};
use gregor_engine::kafka::{decode_request, SUPPORTED_APIS};
use gregor_net::alloc::GuardedAlloc;
use proptest::prelude::*;

#[global_allocator]
static ALLOC: GuardedAlloc = GuardedAlloc;

fn header(api: i16, version: i16, flexible: bool) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_i16(api);
    b.put_i16(version);
    b.put_i32(7);
    b.put_i16(-1); // null client id
    if flexible {
        b.put_u8(0); // no tagged fields
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_request(Bytes::from(bytes));
    }

    #[test]
    fn random_bodies_behind_valid_headers_never_panic(
        which in 0..SUPPORTED_APIS.len(),
        version_pick in any::<u16>(),
        flexible in any::<bool>(),
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let (api, min, max) = SUPPORTED_APIS[which];
        let version = min + (version_pick % ((max - min + 1) as u16)) as i16;
        let mut frame = header(api as i16, version, flexible);
        frame.put_slice(&body);
        let _ = decode_request(frame.freeze());
    }
}

/// Eight bytes claiming 2^31-1 topics: refused as malformed, not an abort.
#[test]
fn huge_array_counts_are_refused() {
    for &(api, min, max) in SUPPORTED_APIS {
        if api == kafka_protocol::messages::ApiKey::ApiVersions {
            continue; // no array to claim; its (ignored) body may hold anything
        }
        for version in min..=max {
            if api == kafka_protocol::messages::ApiKey::ListGroups && version < 4 {
                continue; // no array before the states filter (v4): trailing bytes are ignored
            }
            for flexible in [false, true] {
                let mut frame = header(api as i16, version, flexible);
                frame.put_slice(&[0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]);
                assert!(decode_request(frame.freeze()).is_err(), "{api:?} v{version}");
            }
        }
    }
}
