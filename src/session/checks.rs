//! The pure part of the handshake: what an upgrade request's method and
//! headers alone decide, with no I/O, no warp and no state but the options
//! (so that it can be fuzzed: `fuzz/`). `handshake.rs` runs these checks,
//! then the token check and admission.
//!
//! | check | refusal |
//! |---|---|
//! | `GET`, `Connection: upgrade`, `Upgrade: websocket`, and a `Sec-WebSocket-Key` that is base64 of exactly 16 bytes (RFC 6455 §4.2.1) | 400 |
//! | `Sec-WebSocket-Version: 13` | 426 |
//! | not shutting down | 503 |
//! | `Origin` allowed (when an allow-list is set) | 403 |
//! | user id header: 1–128 bytes of visible ASCII (may be absent with `user_id_from_token`) | 401 |
//! | exactly one token in `Sec-WebSocket-Protocol` | 401 |

use base64::Engine as _;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};

use crate::metrics::Refusal;
use crate::options::Options;
use crate::protocol::PROTOCOL;

/// A refusal: its answer, its counter and the response text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused {
    pub why: Refusal,
    pub status: StatusCode,
    pub text: &'static str,
}

impl Refused {
    pub const fn new(why: Refusal, status: StatusCode, text: &'static str) -> Self {
        Refused { why, status, text }
    }
}

/// What a request that passed every check carries.
#[derive(Debug)]
#[cfg_attr(not(any(test, feature = "fuzzing")), allow(dead_code))]
pub(crate) struct Upgrade<'a> {
    pub key: &'a HeaderValue,
    /// `None`: no header, and the option lets the token name the user.
    pub user_id: Option<&'a str>,
    pub token: &'a str,
    /// Whether `edk.ws.v1` was offered beside the token (then it is what the
    /// 101 echoes).
    pub offered_protocol: bool,
}

/// Every pure check, in order (see the module docs). `upgradable` says
/// whether hyper can upgrade this connection (HTTP/1.1 with upgrades on).
/// (`handshake.rs` runs the two halves with the token check between;
/// this whole is what the fuzz target and the tests check.)
#[cfg_attr(not(any(test, feature = "fuzzing")), allow(dead_code))]
pub(crate) fn check<'a>(
    method: &Method,
    headers: &'a HeaderMap,
    upgradable: bool,
    shutting_down: bool,
    options: &Options,
) -> Result<Upgrade<'a>, Refused> {
    let key = check_upgrade(method, headers, upgradable, shutting_down, options)?;
    let (user_id, token, offered_protocol) = check_identity(headers, options)?;
    Ok(Upgrade {
        key,
        user_id,
        token,
        offered_protocol,
    })
}

/// The WebSocket checks (400, 426), shutdown (503) and origin (403);
/// returns the key.
pub(crate) fn check_upgrade<'a>(
    method: &Method,
    headers: &'a HeaderMap,
    upgradable: bool,
    shutting_down: bool,
    options: &Options,
) -> Result<&'a HeaderValue, Refused> {
    use Refusal::*;
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|k| valid_key(k.as_bytes()));
    let key = match key {
        Some(key) if method == Method::GET && upgradable && is_upgrade(headers) => key,
        _ => return Err(not_an_upgrade()),
    };
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return Err(Refused::new(
            UpgradeRequired,
            StatusCode::UPGRADE_REQUIRED,
            "unsupported WebSocket version: use 13",
        ));
    }
    if shutting_down {
        return Err(Refused::new(
            ShuttingDown,
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down",
        ));
    }
    if !origin_allowed(&options.allowed_origins, headers) {
        return Err(Refused::new(
            Forbidden,
            StatusCode::FORBIDDEN,
            "origin not allowed",
        ));
    }
    Ok(key)
}

/// The 400 of a request that is not a WebSocket upgrade.
pub(crate) fn not_an_upgrade() -> Refused {
    Refused::new(
        Refusal::BadRequest,
        StatusCode::BAD_REQUEST,
        "expected a WebSocket upgrade request",
    )
}

/// The user id header and the token (401): `(user_id, token,
/// offered_protocol)`. No header: the token names the user, when the option
/// `user_id_from_token` allows it (see `auth.rs` for why that is safe); a
/// header that is present but invalid is refused, never ignored in favour
/// of the token.
pub(crate) fn check_identity<'a>(
    headers: &'a HeaderMap,
    options: &Options,
) -> Result<(Option<&'a str>, &'a str, bool), Refused> {
    let unauthorized = |text| Refused::new(Refusal::Unauthorized, StatusCode::UNAUTHORIZED, text);
    let user_id = match headers.get(options.user_id_header.as_str()) {
        Some(v) => match valid_user_id(v.as_bytes()) {
            Some(user) => Some(user),
            None => return Err(unauthorized("invalid user id header")),
        },
        None if options.user_id_from_token => None,
        None => return Err(unauthorized("missing user id header")),
    };
    let Some((token, offered)) = parse_protocols(headers) else {
        return Err(Refused::new(
            Refusal::Unauthorized,
            StatusCode::UNAUTHORIZED,
            "missing token in Sec-WebSocket-Protocol",
        ));
    };
    Ok((user_id, token, offered))
}

/// `Sec-WebSocket-Key`: base64 (with padding) of exactly 16 bytes.
pub(crate) fn valid_key(v: &[u8]) -> bool {
    // 16 bytes are 24 base64 characters; anything longer cannot be one.
    v.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode(v)
            .is_ok_and(|k| k.len() == 16)
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    has_token(headers, header::CONNECTION, "upgrade")
        && has_token(headers, header::UPGRADE, "websocket")
}

fn origin_allowed(allowed: &[String], headers: &HeaderMap) -> bool {
    if allowed.is_empty() {
        return true;
    }
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        Some(origin) => allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)),
        None => false,
    }
}

/// 1–128 bytes of visible ASCII (0x21–0x7E).
pub(crate) fn valid_user_id(v: &[u8]) -> Option<&str> {
    if v.is_empty() || v.len() > 128 || !v.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return None;
    }
    std::str::from_utf8(v).ok()
}

/// The token from `Sec-WebSocket-Protocol`, in either form: `<token>` alone,
/// or `edk.ws.v1, <token>` (any order), and whether `edk.ws.v1` was offered.
/// `None` when there is no token or more than one candidate.
fn parse_protocols(headers: &HeaderMap) -> Option<(&str, bool)> {
    let mut offered_protocol = false;
    let mut token: Option<&str> = None;
    for v in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        for item in v
            .to_str()
            .ok()?
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            if item == PROTOCOL {
                offered_protocol = true;
            } else if token.replace(item).is_some() {
                return None;
            }
        }
    }
    Some((token?, offered_protocol))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(v).unwrap(),
        );
        m
    }

    #[test]
    fn token_forms() {
        assert_eq!(parse_protocols(&h("abc")), Some(("abc", false)));
        assert_eq!(parse_protocols(&h("edk.ws.v1, abc")), Some(("abc", true)));
        assert_eq!(parse_protocols(&h("abc, edk.ws.v1")), Some(("abc", true)));
        assert_eq!(parse_protocols(&h("edk.ws.v1")), None);
        assert_eq!(parse_protocols(&h("a, b")), None);
        assert_eq!(parse_protocols(&HeaderMap::new()), None);
    }

    #[test]
    fn user_ids() {
        assert!(valid_user_id(b"alice").is_some());
        assert!(valid_user_id(b"").is_none());
        assert!(valid_user_id(b"a b").is_none());
        assert!(valid_user_id(&[b'a'; 129]).is_none());
        assert!(valid_user_id(&[b'a'; 128]).is_some());
    }

    fn upgrade(extra: &[(&'static str, &str)], without: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        let base: [(&'static str, &str); 6] = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
            ("x-user-id", "alice"),
            ("sec-websocket-protocol", "edk.ws.v1, tok"),
        ];
        for (k, v) in base.into_iter().chain(extra.iter().copied()) {
            if k != without {
                m.insert(
                    http::HeaderName::from_static(k),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
        }
        m
    }

    #[test]
    fn each_check_has_its_status() {
        let o = Options::default();
        let status = |h: &HeaderMap, shutting_down| {
            check(&Method::GET, h, true, shutting_down, &o)
                .map(|u| {
                    (
                        u.user_id.map(str::to_owned),
                        u.token.to_owned(),
                        u.offered_protocol,
                    )
                })
                .map_err(|r| r.status.as_u16())
        };
        let ok = upgrade(&[], "");
        assert_eq!(
            status(&ok, false),
            Ok((Some("alice".into()), "tok".into(), true))
        );
        assert_eq!(status(&ok, true), Err(503));
        let key = check(&Method::GET, &ok, true, false, &o).unwrap().key;
        assert_eq!(key, "dGhlIHNhbXBsZSBub25jZQ==");
        for (missing, want) in [
            ("upgrade", 400),
            ("sec-websocket-key", 400),
            ("sec-websocket-version", 426),
            ("x-user-id", 401),
            ("sec-websocket-protocol", 401),
        ] {
            assert_eq!(
                status(&upgrade(&[], missing), false),
                Err(want),
                "{missing}"
            );
        }
        let bad_key = upgrade(&[("sec-websocket-key", "")], "");
        assert_eq!(status(&bad_key, false), Err(400));
        let post = check(&Method::POST, &ok, true, false, &o).map(|_| ());
        assert_eq!(post.map_err(|r| r.status.as_u16()), Err(400));
        let not_upgradable = check(&Method::GET, &ok, false, false, &o).map(|_| ());
        assert_eq!(not_upgradable.map_err(|r| r.status.as_u16()), Err(400));
        let strict = Options::default().with_allowed_origins(vec!["https://a.example".into()]);
        let r = check(&Method::GET, &ok, true, false, &strict).map(|_| ());
        assert_eq!(r.map_err(|r| r.status.as_u16()), Err(403));
    }

    #[test]
    fn keys_are_base64_of_16_bytes() {
        assert!(valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        for bad in [
            &b""[..],
            b"not base64 at all!!!!!!!",
            b"dGhlIHNhbXBsZSBub25jZQ",     // no padding
            b"dGhlIHNhbXBsZSBub25jZR==",   // trailing bits set
            b"dGhlIHNhbXBsZSBub25jZXM=",   // 17 bytes
            b"dGhlIHNhbXBsZSBub25j",       // 15 bytes
            b"dGhlIHNhbXBsZSBub25jZQ==\n", // trailing junk
        ] {
            assert!(!valid_key(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
