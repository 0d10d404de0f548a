"""Projects, memberships and permissions: the base every feature and app may use. It imports
no other feature of annotation, nothing of training and nothing of the registry (an
import-linter contract holds this)."""
