"""Privacy operations: erasing one pseudonym's data (`strainwatch privacy erase`), docs/privacy.md."""
