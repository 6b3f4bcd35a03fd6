"""Style categories of notification texts: the taxonomy (from config) and the labelers that give a
text its primary category (rules from the taxonomy file, or a classifier learned from them)."""

from pushgen.categories.labelers import (
           Labeler,
           RuleLabeler,
           build_labeler,
           normalise_for_rules,
)
from pushgen.categories.taxonomy import Category, Taxonomy, TaxonomyError, load_taxonomy

__all__ = ["Category", "Labeler", "RuleLabeler", "Taxonomy", "TaxonomyError", "build_labeler", "load_taxonomy",
           "normalise_for_rules"]
