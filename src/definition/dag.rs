//! The step graph: who waits for whom.
//!
//! A step without `depends_on` waits for the step before it (Go-compatible sequential
//! order); a step with `depends_on` waits for exactly the named steps (`[]`: for none).
//! A built [`Dag`] is acyclic, and every step's ancestors are known, so templates can be
//! checked to read only upstream steps.

use std::collections::HashMap;

/// Parents, children and ancestors of each step, by step index.
#[derive(Debug, Clone)]
pub struct Dag {
    parents: Vec<Vec<usize>>,
    children: Vec<Vec<usize>>,
    ancestors: Vec<Vec<bool>>,
}

/// Why the graph cannot be built.
#[derive(Debug, Clone, PartialEq)]
pub enum DagError {
    /// `depends_on[position]` of step `step` names no step.
    UnknownStep {
        step: usize,
        position: usize,
        name: String,
    },
    /// The steps, by index, of a cycle, each depending on the next; it starts at its
    /// lowest index, which is repeated at the end.
    Cycle(Vec<usize>),
}

impl Dag {
    /// Builds the graph of `steps`, given as `(name, depends_on)` pairs.
    pub fn build(steps: &[(&str, Option<&[String]>)]) -> Result<Self, Vec<DagError>> {
        let index: HashMap<&str, usize> = steps
            .iter()
            .enumerate()
            .map(|(i, (name, _))| (*name, i))
            .collect();
        let mut errors = Vec::new();
        let mut parents = vec![Vec::new(); steps.len()];
        for (i, (_, depends_on)) in steps.iter().enumerate() {
            match depends_on {
                None if i > 0 => parents[i].push(i - 1),
                None => {}
                Some(names) => {
                    for (position, name) in names.iter().enumerate() {
                        match index.get(name.as_str()) {
                            Some(&p) if !parents[i].contains(&p) => parents[i].push(p),
                            Some(_) => {}
                            None => errors.push(DagError::UnknownStep {
                                step: i,
                                position,
                                name: name.clone(),
                            }),
                        }
                    }
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut children = vec![Vec::new(); steps.len()];
        for (child, ps) in parents.iter().enumerate() {
            for &p in ps {
                children[p].push(child);
            }
        }
        let order = topological_order(&parents, &children).map_err(|c| vec![DagError::Cycle(c)])?;
        let mut ancestors = vec![vec![false; steps.len()]; steps.len()];
        for &step in &order {
            for &p in &parents[step] {
                let (from, to) = if p < step {
                    let (lo, hi) = ancestors.split_at_mut(step);
                    (&lo[p], &mut hi[0])
                } else {
                    let (lo, hi) = ancestors.split_at_mut(p);
                    (&hi[0], &mut lo[step])
                };
                for (a, &inherited) in to.iter_mut().zip(from.iter()) {
                    *a |= inherited;
                }
                to[p] = true;
            }
        }
        Ok(Self {
            parents,
            children,
            ancestors,
        })
    }

    /// The steps `step` waits for.
    pub fn parents(&self, step: usize) -> &[usize] {
        &self.parents[step]
    }

    /// The steps that wait for `step`.
    pub fn children(&self, step: usize) -> &[usize] {
        &self.children[step]
    }

    /// True when `ancestor` finishes before `step` can start, directly or transitively.
    pub fn is_upstream(&self, ancestor: usize, step: usize) -> bool {
        self.ancestors[step][ancestor]
    }

    /// Number of steps.
    pub fn len(&self) -> usize {
        self.parents.len()
    }

    /// True for a graph without steps.
    pub fn is_empty(&self) -> bool {
        self.parents.is_empty()
    }
}

/// Kahn's algorithm; on a cycle, finds one and returns its path.
fn topological_order(
    parents: &[Vec<usize>],
    children: &[Vec<usize>],
) -> Result<Vec<usize>, Vec<usize>> {
    let mut waiting: Vec<usize> = parents.iter().map(Vec::len).collect();
    let mut ready: Vec<usize> = (0..parents.len())
        .filter(|&i| waiting[i] == 0)
        .rev()
        .collect();
    let mut order = Vec::with_capacity(parents.len());
    while let Some(step) = ready.pop() {
        order.push(step);
        for &c in &children[step] {
            waiting[c] -= 1;
            if waiting[c] == 0 {
                ready.push(c);
            }
        }
    }
    if order.len() == parents.len() {
        return Ok(order);
    }
    // Every step left over waits on another left-over step; walking parents must loop.
    let start = (0..parents.len())
        .find(|&i| waiting[i] > 0)
        .unwrap_or_default();
    let mut seen = vec![None; parents.len()];
    let mut path = Vec::new();
    let mut at = start;
    loop {
        if let Some(pos) = seen[at] {
            let mut cycle: Vec<usize> = path[pos..].to_vec();
            let lowest = (0..cycle.len()).min_by_key(|&i| cycle[i]).unwrap_or(0);
            cycle.rotate_left(lowest);
            cycle.push(cycle[0]);
            return Err(cycle);
        }
        seen[at] = Some(path.len());
        path.push(at);
        at = parents[at]
            .iter()
            .copied()
            .find(|&p| waiting[p] > 0)
            .unwrap_or(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deps(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn steps_without_depends_on_run_in_order() {
        let dag = Dag::build(&[("a", None), ("b", None), ("c", None)]).unwrap();
        assert_eq!(dag.parents(2), [1]);
        assert!(dag.is_upstream(0, 2));
        assert!(!dag.is_upstream(2, 0));
    }

    #[test]
    fn fan_out_and_join_are_parallel_branches() {
        let (a, bc, d) = (deps(&[]), deps(&["a"]), deps(&["b", "c"]));
        let dag = Dag::build(&[
            ("a", Some(&a)),
            ("b", Some(&bc)),
            ("c", Some(&bc)),
            ("d", Some(&d)),
        ])
        .unwrap();
        assert_eq!(dag.children(0), [1, 2]);
        assert!(!dag.is_upstream(1, 2) && !dag.is_upstream(2, 1));
        assert!(dag.is_upstream(0, 3));
    }

    #[test]
    fn a_cycle_is_reported_with_its_path() {
        let (a, b, c) = (deps(&["c"]), deps(&["a"]), deps(&["b"]));
        let err = Dag::build(&[("a", Some(&a)), ("b", Some(&b)), ("c", Some(&c))]).unwrap_err();
        // a depends on c, c on b, b on a
        assert_eq!(err, vec![DagError::Cycle(vec![0, 2, 1, 0])]);
    }

    #[test]
    fn a_self_dependency_is_a_cycle() {
        let a = deps(&["a"]);
        let err = Dag::build(&[("a", Some(&a))]).unwrap_err();
        assert_eq!(err, vec![DagError::Cycle(vec![0, 0])]);
    }

    #[test]
    fn unknown_names_are_reported_with_their_position() {
        let b = deps(&["a", "nope"]);
        let err = Dag::build(&[("a", None), ("b", Some(&b))]).unwrap_err();
        assert_eq!(
            err,
            vec![DagError::UnknownStep {
                step: 1,
                position: 1,
                name: "nope".into()
            }]
        );
    }
}
