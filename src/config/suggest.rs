//! The nearest valid name to a mistyped one, for "did you mean …?".

/// Edit distance where inserting, deleting or replacing a character, or swapping two
/// neighbours, each cost 1 (optimal string alignment; a swap is the commonest typo).
/// Case is ignored: `outbox_bulk_siz` is as near to `OUTBOX_BULK_SIZE` as in upper case.
pub fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    // d[i][j]: distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    d[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let replace = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + replace);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The candidate nearest to `name`; on a tie, the first in the candidates' order.
pub fn nearest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates.into_iter().min_by_key(|c| distance(name, c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_counts_single_character_edits() {
        assert_eq!(distance("", ""), 0);
        assert_eq!(distance("bulk_size", "bulk_size"), 0);
        assert_eq!(distance("bulk_siz", "bulk_size"), 1, "deletion");
        assert_eq!(distance("bulk_sizze", "bulk_size"), 1, "insertion");
        assert_eq!(distance("bulk_sice", "bulk_size"), 1, "replacement");
        assert_eq!(distance("bluk_size", "bulk_size"), 1, "swap of neighbours");
        assert_eq!(distance("", "lease"), 5);
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    #[test]
    fn distance_ignores_case() {
        assert_eq!(distance("OUTBOX_BULK_SIZ", "outbox_bulk_size"), 1);
    }

    #[test]
    fn nearest_picks_the_closest_and_the_first_on_a_tie() {
        let names = [
            "OUTBOX_BULK_SIZE",
            "OUTBOX_BULK_MAX_BYTES",
            "OUTBOX_LEASE_SECONDS",
        ];
        assert_eq!(nearest("OUTBOX_BULK_SIZ", names), Some("OUTBOX_BULK_SIZE"));
        assert_eq!(
            nearest("OUTBOX_BULK_MAX_BYTE", names),
            Some("OUTBOX_BULK_MAX_BYTES")
        );
        assert_eq!(nearest("ab", ["ax", "xb"]), Some("ax"));
        assert_eq!(nearest("x", []), None);
    }
}
