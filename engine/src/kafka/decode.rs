//! Request frames → typed requests. Checks the API key and version against what we serve
//! before decoding the body, so no unsupported request reaches a handler.

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::Decodable;

use super::supported_versions;

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    pub api: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    /// The header's client id ("" when null).
    pub client_id: String,
    pub body: RequestKind,
}

/// Why a frame could not be served. Every variant but `UnsupportedApiVersions` closes the
/// connection, as Kafka does.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("frame of {0} bytes is shorter than a request header")]
    TooShort(usize),
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    #[error("API {api:?} version {version} is not supported")]
    UnsupportedVersion { api: ApiKey, version: i16 },
    /// ApiVersions at a version we do not know: answered with v0 and UNSUPPORTED_VERSION
    /// (KIP-511), so the client can fall back.
    #[error("ApiVersions version not supported")]
    UnsupportedApiVersions { correlation_id: i32 },
    #[error("malformed request header: {0}")]
    Header(String),
    #[error("malformed {api:?} v{version} request: {reason}")]
    Body {
        api: ApiKey,
        version: i16,
        reason: String,
    },
}

/// Decodes one frame (header + body, without the size prefix).
pub fn decode_request(mut frame: Bytes) -> Result<Request, DecodeError> {
    if frame.len() < 8 {
        return Err(DecodeError::TooShort(frame.len()));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api = ApiKey::try_from(key).map_err(|_| DecodeError::UnknownApi(key))?;
    let Some((min, max)) = supported_versions(api) else {
        return Err(DecodeError::UnsupportedVersion { api, version });
    };
    if version < min || version > max {
        if api == ApiKey::ApiVersions && version > max {
            return Err(DecodeError::UnsupportedApiVersions { correlation_id });
        }
        return Err(DecodeError::UnsupportedVersion { api, version });
    }
    let header = RequestHeader::decode(&mut frame, api.request_header_version(version))
        .map_err(|e| DecodeError::Header(e.to_string()))?;
    debug_assert_eq!(header.correlation_id, correlation_id);
    let body = RequestKind::decode(api, &mut frame, version).map_err(|e| DecodeError::Body {
        api,
        version,
        reason: e.to_string(),
    })?;
    // Bytes after the body are ignored, as Kafka does (librdkafka sends some for Metadata).
    Ok(Request {
        api,
        version,
        correlation_id,
        client_id: header.client_id.map(|c| c.to_string()).unwrap_or_default(),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest};
    use kafka_protocol::protocol::Encodable;

    fn frame<T: Encodable>(api: ApiKey, version: i16, body: &T) -> Bytes {
        let mut b = BytesMut::new();
        let h = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(7);
        h.encode(&mut b, api.request_header_version(version)).unwrap();
        body.encode(&mut b, version).unwrap();
        b.freeze()
    }

    #[test]
    fn decodes_supported_requests() {
        let r = decode_request(frame(ApiKey::Metadata, 9, &MetadataRequest::default())).unwrap();
        assert_eq!((r.api, r.version, r.correlation_id), (ApiKey::Metadata, 9, 7));
    }

    #[test]
    fn refuses_unknown_and_unsupported() {
        let mut b = BytesMut::new();
        b.put_i16(9999);
        b.put_i16(0);
        b.put_i32(1);
        assert_eq!(
            decode_request(b.freeze()).unwrap_err(),
            DecodeError::UnknownApi(9999)
        );
        let f = frame(ApiKey::Metadata, 0, &MetadataRequest::default());
        let mut v = f.to_vec();
        v[3] = 99;
        assert!(matches!(
            decode_request(Bytes::from(v)),
            Err(DecodeError::UnsupportedVersion { .. })
        ));
        let f = frame(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default());
        let mut v = f.to_vec();
        v[3] = 99;
        assert_eq!(
            decode_request(Bytes::from(v)).unwrap_err(),
            DecodeError::UnsupportedApiVersions { correlation_id: 7 }
        );
        assert_eq!(
            decode_request(Bytes::from_static(b"abc")).unwrap_err(),
            DecodeError::TooShort(3)
        );
    }
}
