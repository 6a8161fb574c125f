//! The known differences: cases whose result may differ between socketless and API Gateway,
//! because socketless chose a behaviour where AWS's is unconfirmed or only observed by users.
//! This list is the one place they are named; docs/gateway.md's "Known differences" table has
//! one row per entry (anchor `kd-ID`), and a test keeps the two in step.

/// One known difference.
#[derive(Debug, Clone, Copy)]
pub struct Known {
    /// Anchor in docs/gateway.md, without `#`.
    pub id: &'static str,
    /// The cases that report it.
    pub cases: &'static [&'static str],
    /// What socketless does.
    pub socketless: &'static str,
}

pub const KNOWN: &[Known] = &[
    Known {
        id: "kd-connect-5xx-status",
        cases: &["connect-refused-5xx"],
        socketless: "a $connect backend's 5xx status is the handshake's status",
    },
    Known {
        id: "kd-unmapped-connect-headers",
        cases: &["mapping-unmapped-headers"],
        socketless: "client handshake headers reach the $connect backend only when mapped",
    },
    Known {
        id: "kd-error-status-passthrough",
        cases: &["reply-4xx-passthrough", "reply-5xx-passthrough"],
        socketless: "a backend 4xx/5xx answer on a two-way route is the reply",
    },
    Known {
        id: "kd-non-utf8-reply",
        cases: &["reply-not-utf8"],
        socketless: "a backend answer that is not UTF-8 gives an `Internal server error` frame",
    },
    Known {
        id: "kd-protocol-violation-close",
        cases: &["close-invalid-utf8-1007", "close-reserved-opcode-1002"],
        socketless: "close 1007 for invalid UTF-8, 1002 for other protocol violations",
    },
    Known {
        id: "kd-timeout-close-codes",
        cases: &["idle-close-code", "max-duration-close-code"],
        socketless: "close 1001 on the idle timeout and at the maximum duration",
    },
    Known {
        id: "kd-content-handling-proxy",
        cases: &[
            "content-to-text-text-passes",
            "content-to-text-binary-reply-base64",
            "content-to-binary-not-base64",
        ],
        socketless: "ContentHandlingStrategy converts an HTTP_PROXY integration's payloads and answers",
    },
    Known {
        id: "kd-subprotocol-proxy",
        cases: &["subprotocol-confirmed"],
        socketless: "the Sec-WebSocket-Protocol an HTTP_PROXY $connect backend answers is confirmed in the 101",
    },
];

/// The link printed for a known difference.
pub fn link(id: &str) -> String {
    format!("docs/gateway.md#{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = include_str!("../../docs/gateway.md");

    /// The rows of the "Known differences" table: (anchor id, row text).
    fn doc_rows() -> Vec<(String, String)> {
        let section = DOC
            .split("\n## Known differences")
            .nth(1)
            .expect("docs/gateway.md has a \"Known differences\" section");
        let section = section.split("\n## ").next().unwrap_or(section);
        section
            .lines()
            .filter_map(|l| {
                let start = l.find("<a id=\"")? + 7;
                let end = start + l[start..].find('"')?;
                Some((l[start..end].to_string(), l.to_string()))
            })
            .collect()
    }

    #[test]
    fn the_doc_table_lists_exactly_the_known_differences() {
        let rows = doc_rows();
        let ids: Vec<&str> = rows.iter().map(|(id, _)| id.as_str()).collect();
        let listed: Vec<&str> = KNOWN.iter().map(|k| k.id).collect();
        assert_eq!(
            ids, listed,
            "docs/gateway.md's Known differences rows vs src/conformance/known.rs"
        );
        for (k, (_, row)) in KNOWN.iter().zip(&rows) {
            for case in k.cases {
                assert!(
                    row.contains(&format!("`{case}`")),
                    "the {} row must name `{case}`",
                    k.id
                );
            }
        }
    }

    #[test]
    fn every_case_named_here_exists() {
        let names = super::super::names();
        for k in KNOWN {
            assert!(k.id.starts_with("kd-"));
            for case in k.cases {
                assert!(names.contains(case), "{case} (in {}) is not a case", k.id);
            }
        }
    }
}
