"""URLs of the quality pages and API (included from config/urls.py)."""

urlpatterns = []
