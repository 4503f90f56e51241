"""What the run path and the connected-machine tools share: lm_eval's task index, task planning
(bundles, splits, assets), slugs, bundle lookup and the staged tree's checks."""
