//! Words for why no node fits a task: `0/3 nodes are available: 2 nodes are drained`.

/// `1 node is drained`, `2 nodes are drained`: the count, the noun, and the verb phrase
/// that agrees with it.
pub fn nodes(count: usize, singular: &str, plural: &str) -> String {
    if count == 1 {
        format!("1 node {singular}")
    } else {
        format!("{count} nodes {plural}")
    }
}

/// `1 task`, `2 tasks`.
pub fn tasks(count: usize) -> String {
    if count == 1 {
        "1 task".to_string()
    } else {
        format!("{count} tasks")
    }
}

/// The status message of a task no node fits, as Kubernetes words it:
/// `0/<total> nodes are available: ` and the filters' explanations, most refusals first
/// (filter order among equal counts), joined by `, `.
///
/// `refusals` holds each filter's count and explanation in filter order; filters that
/// refused nothing are left out. With no candidate node at all, `no_candidates` says why.
pub fn no_node_fits(total: usize, refusals: Vec<(usize, String)>, no_candidates: &str) -> String {
    let mut refusals: Vec<(usize, String)> = refusals.into_iter().filter(|r| r.0 > 0).collect();
    // Stable: filters with equal counts keep the pipeline's order.
    refusals.sort_by_key(|refusal| std::cmp::Reverse(refusal.0));
    let explanations: Vec<String> = refusals.into_iter().map(|(_, text)| text).collect();
    let reasons = if explanations.is_empty() {
        no_candidates.to_string()
    } else {
        explanations.join(", ")
    };
    format!("0/{total} nodes are available: {reasons}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_agree_with_their_words() {
        assert_eq!(nodes(1, "is drained", "are drained"), "1 node is drained");
        assert_eq!(nodes(2, "is drained", "are drained"), "2 nodes are drained");
        assert_eq!(nodes(0, "is drained", "are drained"), "0 nodes are drained");
        assert_eq!(tasks(1), "1 task");
        assert_eq!(tasks(3), "3 tasks");
    }

    #[test]
    fn most_refusals_first_then_filter_order() {
        let refusals = vec![
            (1, "1 node is not ready".to_string()),
            (0, "0 nodes are paused".to_string()),
            (1, "1 node is drained".to_string()),
            (2, "2 nodes lack node.labels.tier == db".to_string()),
        ];
        assert_eq!(
            no_node_fits(4, refusals, "unused"),
            "0/4 nodes are available: 2 nodes lack node.labels.tier == db, \
             1 node is not ready, 1 node is drained"
        );
    }

    #[test]
    fn no_candidate_at_all_says_why() {
        assert_eq!(
            no_node_fits(0, Vec::new(), "no node is registered"),
            "0/0 nodes are available: no node is registered"
        );
    }
}
