//! RFC 6120 §3.2 and XEP-0368: which servers a domain's SRV records name, in the order to try
//! them. Pure: the records come from `resolver.rs`, the randomness from the caller.
//!
//! - <https://www.rfc-editor.org/rfc/rfc6120#section-3.2>
//! - <https://www.rfc-editor.org/rfc/rfc2782> (the ordering)
//! - <https://xmpp.org/extensions/xep-0368.html> (`_xmpps-client`: direct TLS)

use rand::RngExt as _;

use super::config::TlsMode;

/// The SRV service of direct TLS connections (XEP-0368).
pub(crate) const DIRECT_TLS_SERVICE: &str = "_xmpps-client._tcp";
/// The SRV service of STARTTLS connections (RFC 6120 §3.2.1).
pub(crate) const STARTTLS_SERVICE: &str = "_xmpp-client._tcp";

/// One SRV record of either service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// The host, without the trailing dot; `"."` (or empty) is RFC 2782's "no service here".
    pub target: String,
    /// `Direct` for an `_xmpps-client` record, `StartTls` for an `_xmpp-client` one.
    pub tls: TlsMode,
}

impl SrvRecord {
    fn is_refusal(&self) -> bool {
        matches!(self.target.as_str(), "." | "")
    }
}

/// What a domain's SRV records (both services together) say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Srv {
    /// No record: connect to the domain itself on 5222 with STARTTLS.
    NoRecord,
    /// Only `.` targets: the domain offers no XMPP client service (RFC 2782, RFC 6120
    /// §3.2.1). XEP-0368: a `.` for direct TLS alone forbids the fallback to the domain too.
    Refused,
    /// The servers to try, in this order.
    Targets(Vec<SrvRecord>),
}

/// Orders the records of both services as one set (XEP-0368: "all priorities and weights are
/// mixed"): by priority, then within a priority by RFC 2782's weighted random selection.
/// `.` targets are dropped; if nothing else is left they make the answer [`Srv::Refused`].
pub(crate) fn plan(records: Vec<SrvRecord>, rng: &mut impl rand::Rng) -> Srv {
    if records.is_empty() {
        return Srv::NoRecord;
    }
    let (refusals, mut usable): (Vec<_>, Vec<_>) =
        records.into_iter().partition(SrvRecord::is_refusal);
    if usable.is_empty() {
        debug_assert!(!refusals.is_empty());
        return Srv::Refused;
    }
    usable.sort_by_key(|r| r.priority);
    let mut ordered = Vec::with_capacity(usable.len());
    let mut rest = usable.as_slice();
    while let Some(first) = rest.first() {
        let same = rest
            .iter()
            .take_while(|r| r.priority == first.priority)
            .count();
        let (group, tail) = rest.split_at(same);
        ordered.extend(by_weight(group.to_vec(), rng));
        rest = tail;
    }
    Srv::Targets(ordered)
}

/// RFC 2782's selection within one priority: the weight-0 records first, then repeatedly a
/// random number in `0..=sum of weights` picks the first record whose running sum reaches it.
fn by_weight(mut group: Vec<SrvRecord>, rng: &mut impl rand::Rng) -> Vec<SrvRecord> {
    group.sort_by_key(|r| r.weight != 0);
    let mut ordered = Vec::with_capacity(group.len());
    while !group.is_empty() {
        let total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
        let pick = rng.random_range(0..=total);
        let mut running = 0u32;
        let index = group
            .iter()
            .position(|r| {
                running += u32::from(r.weight);
                running >= pick
            })
            .unwrap_or(group.len() - 1);
        ordered.push(group.remove(index));
    }
    ordered
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng as _;
    use rand::rngs::StdRng;

    use super::*;

    fn rec(priority: u16, weight: u16, target: &str, tls: TlsMode) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port: if tls == TlsMode::Direct { 5223 } else { 5222 },
            target: target.to_owned(),
            tls,
        }
    }

    fn targets(srv: Srv) -> Vec<String> {
        match srv {
            Srv::Targets(t) => t.into_iter().map(|r| r.target).collect(),
            other => panic!("expected targets, got {other:?}"),
        }
    }

    #[test]
    fn no_record_means_the_domain_itself() {
        assert_eq!(
            plan(Vec::new(), &mut StdRng::seed_from_u64(1)),
            Srv::NoRecord
        );
    }

    #[test]
    fn lower_priority_comes_first_whatever_the_weights() {
        let records = vec![
            rec(20, 100, "c", TlsMode::StartTls),
            rec(5, 0, "a", TlsMode::StartTls),
            rec(10, 65535, "b", TlsMode::StartTls),
        ];
        for seed in 0..50 {
            let got = targets(plan(records.clone(), &mut StdRng::seed_from_u64(seed)));
            assert_eq!(got, ["a", "b", "c"], "seed {seed}");
        }
    }

    #[test]
    fn weights_share_out_the_first_place_within_a_priority() {
        let records = vec![
            rec(0, 10, "light", TlsMode::StartTls),
            rec(0, 90, "heavy", TlsMode::StartTls),
            rec(1, 0, "backup", TlsMode::StartTls),
        ];
        let mut rng = StdRng::seed_from_u64(7);
        let mut heavy_first = 0;
        for _ in 0..1000 {
            let got = targets(plan(records.clone(), &mut rng));
            assert_eq!(got.len(), 3);
            assert_eq!(got[2], "backup", "the next priority comes after both");
            if got[0] == "heavy" {
                heavy_first += 1;
            }
        }
        // Expected 90 % (900 of 1000): well inside the bounds for any fair draw.
        assert!(
            (850..=950).contains(&heavy_first),
            "heavy first {heavy_first} times of 1000"
        );
    }

    #[test]
    fn a_seeded_rng_gives_a_repeatable_order_and_zero_weights_still_get_picked() {
        let records = vec![
            rec(0, 0, "zero", TlsMode::StartTls),
            rec(0, 1, "one", TlsMode::StartTls),
            rec(0, 1, "other", TlsMode::StartTls),
        ];
        let a = targets(plan(records.clone(), &mut StdRng::seed_from_u64(42)));
        let b = targets(plan(records.clone(), &mut StdRng::seed_from_u64(42)));
        assert_eq!(a, b);
        // The weight-0 record is first only when the draw is 0 (1 in 3 here), else last.
        let mut rng = StdRng::seed_from_u64(3);
        let firsts: Vec<String> = (0..300)
            .map(|_| targets(plan(records.clone(), &mut rng)).remove(0))
            .collect();
        let zero_first = firsts.iter().filter(|t| *t == "zero").count();
        assert!(
            (60..=140).contains(&zero_first),
            "zero first {zero_first} of 300"
        );
    }

    #[test]
    fn direct_tls_and_starttls_records_are_merged_by_priority() {
        let records = vec![
            rec(10, 0, "starttls-backup", TlsMode::StartTls),
            rec(0, 0, "starttls-main", TlsMode::StartTls),
            rec(5, 0, "direct-main", TlsMode::Direct),
            rec(20, 0, "direct-backup", TlsMode::Direct),
        ];
        let Srv::Targets(got) = plan(records, &mut StdRng::seed_from_u64(0)) else {
            panic!("targets expected");
        };
        let got: Vec<(&str, TlsMode, u16)> = got
            .iter()
            .map(|r| (r.target.as_str(), r.tls, r.port))
            .collect();
        assert_eq!(
            got,
            [
                ("starttls-main", TlsMode::StartTls, 5222),
                ("direct-main", TlsMode::Direct, 5223),
                ("starttls-backup", TlsMode::StartTls, 5222),
                ("direct-backup", TlsMode::Direct, 5223),
            ]
        );
    }

    #[test]
    fn weights_are_mixed_across_the_two_services() {
        let records = vec![
            rec(0, 50, "direct", TlsMode::Direct),
            rec(0, 50, "starttls", TlsMode::StartTls),
        ];
        let mut rng = StdRng::seed_from_u64(11);
        let direct_first = (0..400)
            .filter(|_| targets(plan(records.clone(), &mut rng))[0] == "direct")
            .count();
        assert!(
            (150..=250).contains(&direct_first),
            "direct first {direct_first} of 400"
        );
    }

    #[test]
    fn a_dot_target_alone_refuses_the_service() {
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(
            plan(vec![rec(0, 0, ".", TlsMode::StartTls)], &mut rng),
            Srv::Refused
        );
        // XEP-0368: `.` for direct TLS alone also rules out the fallback to the domain.
        assert_eq!(
            plan(vec![rec(0, 0, ".", TlsMode::Direct)], &mut rng),
            Srv::Refused
        );
        assert_eq!(
            plan(
                vec![
                    rec(0, 0, ".", TlsMode::Direct),
                    rec(0, 0, ".", TlsMode::StartTls)
                ],
                &mut rng
            ),
            Srv::Refused
        );
    }

    #[test]
    fn a_dot_for_one_service_leaves_the_other() {
        let records = vec![
            rec(0, 0, ".", TlsMode::Direct),
            rec(5, 0, "xmpp.example.org", TlsMode::StartTls),
        ];
        let Srv::Targets(got) = plan(records, &mut StdRng::seed_from_u64(0)) else {
            panic!("targets expected");
        };
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].target.as_str(), got[0].tls),
            ("xmpp.example.org", TlsMode::StartTls)
        );
    }
}
